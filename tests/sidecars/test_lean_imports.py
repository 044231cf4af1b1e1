"""A started sidecar has not loaded what it never runs (the SDK's client, cryptography's extension,
redis-py's cluster client, httpx2), and loses nothing by it: whatever asks for one of them gets the
real thing then (sidecars/common/lean_imports.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from .helpers import REPO

SCRIPT = textwrap.dedent("""
    import json, sys
    from sidecars.redis.server import build
    sidecar = build({"REDIS_HOST": "localhost", "REDIS_PORT": "6379", "MCP_AUTH": "none"})
    sidecar.asgi_app()
    from uvicorn.config import Config
    from uvicorn.server import Server
    loaded = {name: name in sys.modules for name in (
        "mcp.client", "cryptography.hazmat.bindings._rust", "redis.cluster", "redis.asyncio.cluster",
        "httpx2._client")}

    # Nothing is lost: each of them works when something asks for it.
    from mcp import Client
    from mcp.server.request_state import RequestStateSecurity
    import httpx2, uvicorn, redis
    codec = RequestStateSecurity.ephemeral().codec  # the SDK's AES-GCM codec, through the stand-ins
    works = {
        "client": Client.__module__ == "mcp.client.client",
        "aes_gcm_round_trip": codec.unseal(codec.seal(b"state")) == b"state",
        "httpx2": httpx2.AsyncClient.__name__ == "AsyncClient",
        "uvicorn.run": callable(uvicorn.run),
        "redis.RedisCluster": redis.RedisCluster.__name__ == "RedisCluster",
    }
    print(json.dumps({"loaded": loaded, "works": works}))
""")


def test_started_sidecar_leaves_unused_packages_unloaded_and_loads_them_on_demand():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == dict.fromkeys(report["loaded"], False)
    assert report["works"] == dict.fromkeys(report["works"], True)


def test_a_request_state_token_is_refused_not_crashed():
    """The sidecar's codec issues no request state and refuses every token as invalid."""
    script = textwrap.dedent("""
        from sidecars.common.app import NoRequestState
        from mcp.server.request_state import InvalidRequestState
        try:
            NoRequestState().unseal("v1.anything")
        except InvalidRequestState:
            print("refused")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "refused", done.stderr[-2000:]
