"""Both sidecars under a read-only root as uid 1000 (bubblewrap), and driven by an independent
MCP client, the MCP Inspector CLI (npm)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.inspector import InspectorUnavailable, inspector_command
from tests.support.inspector import run_inspector as _run_inspector
from tests.support.sandbox import SandboxUnavailable, sandboxed

from .conftest import es_env, redis_env
from .helpers import REPO, SidecarProcess, call, list_tools

pytestmark = pytest.mark.slow

UID = 1000


# ----------------------------------------------------------------------------------- bubblewrap
def sandbox(argv: list[str]) -> list[str]:
    """``argv`` as uid 1000 with ``/`` read-only and a tmpfs /tmp (as the injected container runs)."""
    try:
        return sandboxed(argv, chdir=REPO)
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(real uid, command line) of ``pid`` and every process below it."""
    found, todo = [], [pid]
    for _ in range(50):
        if not todo:
            break
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            status = Path(f"/proc/{current}/status").read_text()
            cmdline = Path(f"/proc/{current}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        found.append((uid, cmdline))
        todo.extend(int(c) for c in children)
    return found


def test_sandbox_really_is_read_only_and_unprivileged():
    probe = subprocess.run(sandbox(["sh", "-c", f"id -u; touch {REPO}/.ro-probe; touch /tmp/ok && echo tmp-writable"]),
                           capture_output=True, text=True, timeout=30)
    assert probe.stdout.split()[0] == str(UID)
    assert "Read-only file system" in probe.stderr and "tmp-writable" in probe.stdout
    assert not (REPO / ".ro-probe").exists()


@pytest.mark.parametrize("backend", ["redis", "elasticsearch"])
def test_sidecar_serves_mcp_from_a_read_only_root_as_uid_1000(backend, request):
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        server.command("SET", "sandboxed", "yes")
        env, tool, args = redis_env(server), "get", {"key": "sandboxed"}
    else:
        node = request.getfixturevalue("es_node")
        env, tool, args = es_env(node), "count", {"index": "books"}
    command = sandbox([sys.executable, "-m", f"sidecars.{backend}"])
    with SidecarProcess(backend, {**env, "PYTHONDONTWRITEBYTECODE": "1"}, command=command) as sidecar:
        servers = [uid for uid, cmd in _descendants(sidecar.proc.pid) if f"-m sidecars.{backend}" in cmd
                   and not cmd.startswith(("bwrap", "setpriv"))]
        assert servers == [UID]  # the Python process itself, not just the sandbox wrapper
        assert tool in {t.name for t in list_tools(sidecar.url)}
        result = call(sidecar.url, tool, args)
        assert not result.is_error, result.content
        assert sidecar.get("/health").json()["status"] == "ok"


# ---------------------------------------------------------------------------- MCP Inspector CLI
@pytest.fixture(scope="module")
def inspector() -> list[str]:
    """The Inspector's launcher, installed once into .cache/npm (visible npm progress)."""
    try:
        return inspector_command()
    except InspectorUnavailable as exc:
        pytest.skip(str(exc))


def run_inspector(inspector: list[str], url: str, *args: str, tmp_path: Path) -> dict:
    return _run_inspector(url, *args, home=tmp_path)


def test_inspector_cli_lists_and_calls_redis_tools(inspector, redis_server, tmp_path):
    redis_server.command("SET", "inspected", "by the inspector")
    env = redis_env(redis_server, MCP_AUTH_TOKEN="insp-token")
    with SidecarProcess("redis", env) as sidecar:
        auth = ["--header", "Authorization: Bearer insp-token"]
        listed = run_inspector(inspector, sidecar.url, *auth, "--method", "tools/list", tmp_path=tmp_path)
        by_name = {t["name"]: t for t in listed["tools"]}
        assert by_name["get"]["annotations"]["readOnlyHint"] is True and "outputSchema" in by_name["get"]
        called = run_inspector(inspector, sidecar.url, *auth, "--method", "tools/call", "--tool-name", "get",
                               "--tool-arg", "key=inspected", tmp_path=tmp_path)
        assert called["structuredContent"]["value"] == "by the inspector"


def test_inspector_cli_lists_and_calls_elasticsearch_tools(inspector, es_node, tmp_path):
    with SidecarProcess("elasticsearch", es_env(es_node)) as sidecar:
        auth = ["--header", f"Authorization: Bearer {sidecar.token}"]
        listed = run_inspector(inspector, sidecar.url, *auth, "--method", "tools/list", tmp_path=tmp_path)
        assert "search" in {t["name"] for t in listed["tools"]}
        called = run_inspector(inspector, sidecar.url, *auth, "--method", "tools/call", "--tool-name", "count",
                               "--tool-arg", "index=books", tmp_path=tmp_path)
        assert called["structuredContent"] == {"index": "books", "count": 30}
