"""Run a sidecar as a real process and talk MCP to it (shared by the tests and bench/sidecars)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import free_port, stop_group, wait_listening

REPO = Path(__file__).resolve().parents[2]
#: Sidecars run with auth on, as in a pod: a SidecarProcess gets this token unless the test sets
#: MCP_AUTH, MCP_AUTH_TOKEN or MCP_AUTH_TOKEN_FILE itself, and call()/list_tools() send it.
DEFAULT_TOKEN = "test-token-5f0c2a9e41d7b386"
_AUTH_ENV = ("MCP_AUTH", "MCP_AUTH_TOKEN", "MCP_AUTH_TOKEN_FILE")


class SidecarProcess:
    """``python -m sidecars.<backend>`` with the given env; stdout (the audit trail) goes to a file."""

    def __init__(self, backend: str, env: dict[str, str], *, command: list[str] | None = None, port: int | None = None):
        self.backend = backend
        self.port = port or free_port()
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ES_", "MCP_"))},
                    "MCP_HOST": "127.0.0.1", "MCP_PORT": str(self.port), **env}
        if not any(name in env for name in _AUTH_ENV):
            self.env["MCP_AUTH_TOKEN"] = DEFAULT_TOKEN
        #: The bearer token this sidecar accepts from its env (None: auth off or file-based).
        self.token = self.env.get("MCP_AUTH_TOKEN") if self.env.get("MCP_AUTH") != "none" else None
        self.command = command or [sys.executable, "-m", f"sidecars.{backend}"]
        self._log = tempfile.NamedTemporaryFile(prefix=f"sidecar-{backend}-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None
        self.started_in: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header a client of this sidecar sends."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "SidecarProcess":
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command, env=self.env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            wait_listening(self.proc, self.port, what="sidecar", log=self.output, timeout=timeout, interval=0.02, connect_timeout=0.2)
        except RuntimeError:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0
        return self

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def audit_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    pass
        return lines

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_group(proc)

    def close(self) -> None:
        self.stop()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass

    def __enter__(self) -> "SidecarProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, **kw)


async def _session(url: str, token: str | None, fn):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    token = DEFAULT_TOKEN if token is None else token  # "" sends no token at all
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            return await fn(client)


def list_tools(url: str, token: str | None = None) -> list:
    async def go(c):
        return (await c.list_tools()).tools
    return asyncio.run(_session(url, token, go))


def call(url: str, tool: str, args: dict | None = None, token: str | None = None):
    async def go(c):
        return await c.call_tool(tool, args or {})
    return asyncio.run(_session(url, token, go))


def calls(url: str, batch: list[tuple[str, dict]], token: str | None = None) -> list:
    """Several calls over one client session."""
    async def go(c):
        return [await c.call_tool(t, a) for t, a in batch]
    return asyncio.run(_session(url, token, go))


def error_text(result) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)
