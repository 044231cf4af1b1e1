"""The Redis sidecar as an operator sees it: access control, health, metrics, audit, failures, config."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.backends.redis_server import RedisServer

from .conftest import redis_env
from .helpers import SidecarProcess, call, error_text, list_tools

pytestmark = pytest.mark.slow

TOKEN = "tok-7f3a9c"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-11-25"}


@pytest.fixture(scope="module")
def guarded(redis_server):
    env = redis_env(redis_server, MCP_AUTH_TOKEN=TOKEN, MCP_ALLOWED_ORIGINS="https://studio.example.com")
    with SidecarProcess("redis", env) as proc:
        yield proc


def post(proc: SidecarProcess, **headers: str) -> httpx.Response:
    return httpx.post(proc.url, json=INIT, headers={**MCP_HEADERS, **headers}, timeout=10)


def test_bearer_token_is_required_for_mcp(guarded):
    assert post(guarded).status_code == 401
    assert post(guarded, Authorization="Bearer wrong").status_code == 401
    assert post(guarded, Authorization=f"Basic {TOKEN}").status_code == 401
    assert post(guarded).headers["www-authenticate"].startswith("Bearer")
    assert post(guarded, Authorization=f"Bearer {TOKEN}").status_code == 200
    # A real MCP client with the token works end to end.
    assert "get" in {t.name for t in list_tools(guarded.url, token=TOKEN)}


def test_probe_and_metrics_endpoints_stay_open_without_token(guarded):
    assert guarded.get("/livez").status_code == 200
    assert guarded.get("/health").status_code == 200
    assert guarded.get("/metrics").status_code == 200


def test_foreign_origin_is_rejected_even_with_the_token(guarded):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert post(guarded, Origin="http://evil.example", **auth).status_code == 403
    assert post(guarded, Origin=f"http://127.0.0.1:{guarded.port}.evil.example", **auth).status_code == 403
    assert post(guarded, Origin="https://studio.example.com", **auth).status_code == 200
    assert post(guarded, Origin="http://localhost:6274", **auth).status_code == 200


def test_default_sidecar_rejects_foreign_origin_and_accepts_no_origin(redis_sidecar):
    assert post(redis_sidecar, Origin="http://attacker.test", **redis_sidecar.headers).status_code == 403
    assert post(redis_sidecar, **redis_sidecar.headers).status_code == 200


def test_health_reports_backend_round_trip(redis_sidecar):
    body = redis_sidecar.get("/health").json()
    assert body["status"] == "ok" and body["backend"] == "redis" and body["reachable"] is True
    assert 0 < body["round_trip_ms"] < 1000 and body["last_error"] is None


def test_metrics_count_calls_by_tool_and_outcome(redis_sidecar):
    call(redis_sidecar.url, "get", {"key": "a"})
    call(redis_sidecar.url, "hgetall", {"key": "nope"})
    text = redis_sidecar.get("/metrics").text
    assert 'mcp_tool_calls_total{outcome="ok",tool="get"}' in text
    assert 'mcp_tool_call_duration_seconds_bucket{le="0.005",tool="get"}' in text
    assert "mcp_backend_errors_total" in text and "# TYPE mcp_tool_call_duration_seconds histogram" in text


def test_audit_line_per_call_names_arguments_never_values(redis_sidecar):
    secret = "value-that-must-not-be-logged"
    call(redis_sidecar.url, "get", {"key": secret})
    lines = [line for line in redis_sidecar.audit_lines() if line.get("event") == "tool_call"]
    last = lines[-1]
    assert last["tool"] == "get" and last["outcome"] == "ok" and last["args"] == ["key"]
    assert last["duration_ms"] >= 0
    assert secret not in redis_sidecar.output()


def test_backend_down_then_back(tmp_path):
    """Stop the real Redis under a running sidecar, then start it again on the same port."""
    with RedisServer(password="pw") as redis, SidecarProcess("redis", redis_env(redis)) as sidecar:
        redis.command("SET", "k", "before")
        assert call(sidecar.url, "get", {"key": "k"}).structured_content["value"] == "before"

        redis.stop()
        result = call(sidecar.url, "get", {"key": "k"})
        assert result.is_error and "unreachable" in error_text(result)
        health = sidecar.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded" and "unreachable" in health.json()["last_error"]
        assert sidecar.alive()
        with socket.create_connection(("127.0.0.1", sidecar.port), timeout=1):
            pass  # what the kubelet's TCP probe sees
        assert 'mcp_tool_calls_total{outcome="backend_error",tool="get"} 1.0' in sidecar.get("/metrics").text
        assert any(line.get("outcome") == "backend_error" for line in sidecar.audit_lines())

        redis.start()
        redis.command("SET", "k", "after")
        result = call(sidecar.url, "get", {"key": "k"})  # pooled connections are dead: must reconnect by itself
        assert not result.is_error, error_text(result)
        assert result.structured_content["value"] == "after"
        assert sidecar.get("/health").status_code == 200


def test_unresponsive_backend_times_out(tmp_path):
    """A TCP peer that accepts but never answers: calls fail within MCP_BACKEND_TIMEOUT."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(silent.getsockname()[1]), "MCP_BACKEND_TIMEOUT": "0.5"}
        with SidecarProcess("redis", env) as sidecar:
            t0 = time.monotonic()
            result = call(sidecar.url, "dbsize")
            assert result.is_error and "did not answer" in error_text(result)
            assert time.monotonic() - t0 < 3
            assert sidecar.get("/health").status_code == 503
            # The kubelet's probe endpoint stays 200: a datastore outage never restarts the sidecar.
            assert sidecar.get("/livez").status_code == 200


def test_wrong_password_is_reported_as_such(redis_with_password):
    env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_with_password.port), "REDIS_PASSWORD": "nope"}
    with SidecarProcess("redis", env) as sidecar:
        result = call(sidecar.url, "dbsize")
        assert result.is_error and "REDIS_PASSWORD" in error_text(result)
        assert sidecar.get("/health").json()["status"] == "degraded"
    env.pop("REDIS_PASSWORD")
    with SidecarProcess("redis", env) as sidecar:
        result = call(sidecar.url, "dbsize")
        assert result.is_error and "REDIS_PASSWORD" in error_text(result)


ENTRY = Path(sys.executable).parent / "mcp-redis"


@pytest.mark.parametrize("env, named", [
    ({}, "REDIS_HOST"),
    ({"REDIS_HOST": "localhost"}, "REDIS_PORT"),
    ({"REDIS_HOST": "localhost", "REDIS_PORT": "six"}, "REDIS_PORT"),
    ({"REDIS_HOST": "localhost", "REDIS_PORT": "70000"}, "REDIS_PORT"),
    ({"REDIS_HOST": "localhost", "REDIS_PORT": "6379", "REDIS_DB": "-1"}, "REDIS_DB"),
    ({"REDIS_HOST": "localhost", "REDIS_PORT": "6379", "MCP_READ_ONLY": "maybe"}, "MCP_READ_ONLY"),
    ({"REDIS_HOST": "localhost", "REDIS_PORT": "6379", "MCP_PORT": "x"}, "MCP_PORT"),
    ({"REDIS_HOST": "localhost", "REDIS_PORT": "6379", "REDIS_TLS_CA_FILE": "/nope.pem"}, "REDIS_TLS_CA_FILE"),
])
def test_bad_configuration_fails_fast_with_one_line(env, named):
    clean = {"PATH": "/usr/bin:/bin", **env}
    t0 = time.monotonic()
    done = subprocess.run([str(ENTRY)], env=clean, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and lines[0].startswith("configuration error:")
    assert time.monotonic() - t0 < 10


def test_module_entry_point_serves(redis_server):
    env = redis_env(redis_server)
    with SidecarProcess("redis", env, command=[str(ENTRY)]) as sidecar:
        assert sidecar.get("/health").json()["status"] == "ok"


def test_get_on_mcp_is_refused_instead_of_hanging(redis_sidecar):
    """In stateless mode the SDK would hold a GET /mcp open forever; a misdirected probe must not."""
    resp = httpx.get(redis_sidecar.url, headers={"Accept": "text/event-stream", **redis_sidecar.headers}, timeout=5)
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert httpx.delete(redis_sidecar.url, headers=redis_sidecar.headers, timeout=5).status_code == 405


def test_redis_db_selects_the_database(redis_server):
    with socket.create_connection((redis_server.host, redis_server.port)) as s:
        s.sendall(b"SELECT 3\r\nSET only-in-db3 here\r\n")
        s.recv(64)
    with SidecarProcess("redis", redis_env(redis_server, REDIS_DB="3")) as sidecar:
        assert call(sidecar.url, "get", {"key": "only-in-db3"}).structured_content["value"] == "here"


def test_tls_with_ca_verification(tmp_path):
    """A TLS-only redis-server with a test CA: REDIS_TLS + REDIS_TLS_CA_FILE, and what happens without them."""
    trustme = pytest.importorskip("trustme")
    from tests.backends.redis_server import TlsFiles

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem"), ca=str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(files.cert)
    cert.private_key_pem.write_to_path(files.key)
    ca.cert_pem.write_to_path(files.ca)
    with RedisServer(tls=files, password="tls-pw") as redis:
        redis.command("SET", "secure", "yes")
        base = redis_env(redis, REDIS_TLS="true")
        with SidecarProcess("redis", {**base, "REDIS_TLS_CA_FILE": files.ca}) as sidecar:
            assert call(sidecar.url, "get", {"key": "secure"}).structured_content["value"] == "yes"
        with SidecarProcess("redis", base) as untrusted:  # system trust store does not know the test CA
            result = call(untrusted.url, "get", {"key": "secure"})
            assert result.is_error and "CERTIFICATE_VERIFY_FAILED" in error_text(result).upper()
            assert untrusted.get("/health").status_code == 503
        with SidecarProcess("redis", {**base, "REDIS_TLS_VERIFY": "false"}) as unverified:
            assert call(unverified.url, "get", {"key": "secure"}).structured_content["value"] == "yes"
