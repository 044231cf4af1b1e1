"""Auth on by default, against real sidecar processes: fail closed without a token, rotation through
the mounted Secret file without a restart, explicit opt-out only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import redis_env
from .helpers import SidecarProcess, call, list_tools

pytestmark = pytest.mark.slow

LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-11-25"}


def post(sidecar: SidecarProcess, token: str | None = None) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(sidecar.url, json=LIST, headers={**MCP_HEADERS, **auth}, timeout=10)


class SecretVolume:
    """A Secret volume as the kubelet writes it: ``token -> ..data/token``, ``..data -> ..<timestamp>``;
    an update writes a new timestamped directory and renames a new ``..data`` link over the old one."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.generation = 0

    @property
    def token_path(self) -> Path:
        return self.root / "token"

    def write(self, token: str) -> None:
        self.generation += 1
        payload = self.root / f"..2026_11_30_{self.generation:04d}"
        payload.mkdir()
        (payload / "token").write_text(token)
        tmp_link = self.root / "..data_tmp"
        tmp_link.symlink_to(payload.name)
        os.replace(tmp_link, self.root / "..data")
        if not self.token_path.is_symlink():
            self.token_path.symlink_to("..data/token")


def test_blank_token_fails_closed_and_the_sidecar_stays_live(redis_server):
    """Today's main treated a blank MCP_AUTH_TOKEN as "auth off": any pod could read the datastore."""
    with SidecarProcess("redis", redis_env(redis_server, MCP_AUTH_TOKEN="   ")) as sidecar:
        refused = post(sidecar)
        assert refused.status_code == 503
        body = refused.json()
        assert body["error"] == "auth_not_configured"
        assert "mcp-sidecar-token" in body["message"] and "rotate-token" in body["message"]
        assert post(sidecar, "anything").status_code == 503  # no token to compare with: nothing gets in
        with pytest.raises(Exception):  # a real MCP client is refused too
            call(sidecar.url, "get", {"key": "k"}, token="guess")
        assert sidecar.get("/livez").status_code == 200


def test_fail_closed_keeps_probes_health_and_metrics_answering(redis_server):
    with SidecarProcess("redis", redis_env(redis_server, MCP_AUTH_TOKEN_FILE="/nonexistent/token")) as sidecar:
        assert post(sidecar).status_code == 503
        assert sidecar.get("/livez").status_code == 200
        assert sidecar.get("/metrics").status_code == 200
        health = sidecar.get("/health")
        assert health.status_code == 200  # the datastore is fine; the readiness probe is /livez anyway
        assert health.json()["auth"] == "not_configured" and "not readable" in health.json()["auth_error"]
        startup = next(line for line in sidecar.audit_lines() if line.get("event") == "startup")
        assert startup["auth"] == "not_configured" and startup["auth_source"] == "file"
        assert sidecar.alive()


def test_token_file_appears_and_rotates_without_a_restart(redis_server, tmp_path):
    """The Secret is optional in the pod: it may be created after the sidecar started, and rotated later."""
    redis_server.command("SET", "rotated", "yes")
    volume = SecretVolume(tmp_path / "secret")
    env = redis_env(redis_server, MCP_AUTH_TOKEN_FILE=str(volume.token_path))
    with SidecarProcess("redis", env) as sidecar:
        pid = sidecar.proc.pid
        assert post(sidecar, "first").status_code == 503

        volume.write("first\n")  # `--from-file` style trailing newline is not part of the token
        assert post(sidecar, "first").status_code == 200
        assert call(sidecar.url, "get", {"key": "rotated"}, token="first").structured_content["value"] == "yes"
        assert post(sidecar, "second").status_code == 401

        volume.write("second")
        assert post(sidecar, "first").status_code == 401
        assert post(sidecar, "second").status_code == 200
        assert "get" in {t.name for t in list_tools(sidecar.url, token="second")}

        volume.write("")  # an emptied Secret is the fail-closed state again, not "auth off"
        assert post(sidecar).status_code == 503 and post(sidecar, "second").status_code == 503
        assert sidecar.proc.pid == pid and sidecar.alive()
        states = [line["auth"] for line in sidecar.audit_lines() if line.get("event") == "auth_state"]
        assert states == ["not_configured", "token", "not_configured"]
        assert "first" not in sidecar.output() and "second" not in sidecar.output()


def test_wrong_or_missing_token_is_401(redis_server):
    with SidecarProcess("redis", redis_env(redis_server, MCP_AUTH_TOKEN="right-token")) as sidecar:
        assert post(sidecar).status_code == 401
        assert post(sidecar, "wrong-token").status_code == 401
        assert post(sidecar, "right-token").status_code == 200
        assert sidecar.get("/health").json()["auth"] == "token"


def test_auth_none_is_the_only_way_to_run_without_a_token(redis_server):
    with SidecarProcess("redis", redis_env(redis_server, MCP_AUTH="none")) as sidecar:
        assert post(sidecar).status_code == 200
        assert sidecar.get("/health").json()["auth"] == "none"
        startup = next(line for line in sidecar.audit_lines() if line.get("event") == "startup")
        assert startup["auth"] == "none"


def test_unknown_auth_mode_refuses_to_start(redis_server):
    env = {"PATH": "/usr/bin:/bin", **redis_env(redis_server, MCP_AUTH="off-please")}
    done = subprocess.run([sys.executable, "-m", "sidecars.redis"], env=env, capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2
    assert done.stderr.strip().startswith("configuration error: MCP_AUTH must be token or none")

