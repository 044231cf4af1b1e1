"""Fixtures: real redis-server processes and sidecar processes, all stopped after use."""

from __future__ import annotations

import pytest

from tests.backends.redis_server import RedisServer

from .helpers import SidecarProcess

PASSWORD = "s3cret-pa55"


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_with_password():
    with RedisServer(password=PASSWORD) as server:
        yield server


def redis_env(server: RedisServer, **extra: str) -> dict[str, str]:
    env = {"REDIS_HOST": server.host, "REDIS_PORT": str(server.port)}
    if server.password:
        env["REDIS_PASSWORD"] = server.password
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def redis_sidecar(redis_server):
    """Default settings: read-only, no token."""
    with SidecarProcess("redis", redis_env(redis_server)) as proc:
        yield proc


@pytest.fixture(scope="session")
def redis_sidecar_rw(redis_with_password):
    """Writes enabled, password-protected Redis, small caps to exercise truncation."""
    env = redis_env(redis_with_password, MCP_READ_ONLY="false", MCP_MAX_ITEMS="20", MCP_MAX_VALUE_BYTES="1024")
    with SidecarProcess("redis", env) as proc:
        yield proc
