"""Shared pieces of the security suite: the marker, a real admission server, a real Redis sidecar,
and the kernel's memory figures for a process.

Everything runs as real processes (``mcp-sidecar serve`` over TLS, ``python -m sidecars.redis``
against a real redis-server), bounded in count and time so the whole directory stays within a few
minutes on 2 cores.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from tests.backends.redis_server import RedisServer
from tests.sidecars.helpers import SidecarProcess
from tests.support.webhook_process import WebhookProcess


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "security: abuse cases against real processes (tests/security)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.security)
            item.add_marker(pytest.mark.slow)


def proc_status_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` figure in KiB: ``VmRSS`` (now) or ``VmHWM`` (peak since start)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


@pytest.fixture(scope="module")
def webhook(tmp_path_factory):
    """The admission server with the built-in defaults, as the chart runs it (TLS, no operator)."""
    with WebhookProcess(tmp_path_factory.mktemp("webhook")) as process:
        yield process


@pytest.fixture(scope="module")
def webhook_client(webhook):
    context = ssl.create_default_context(cafile=str(webhook.ca_file))
    with httpx.Client(base_url=webhook.url, verify=context, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def redis_sidecar():
    """A Redis sidecar (auth on, default limits) in front of a real redis-server."""
    with RedisServer() as redis:
        env = {"REDIS_HOST": redis.host, "REDIS_PORT": str(redis.port)}
        with SidecarProcess("redis", env) as sidecar:
            yield sidecar
