"""MCP wire strictness, over HTTP against a real Redis sidecar (auth on, as in a pod).

Malformed JSON-RPC gets HTTP 400 with one short JSON-RPC error and ``id: null``, never a silent 202
nor a pydantic report; the server advertises and answers tools only; ``serverInfo.version`` is the
package version. Both request paths (the tools/call fast path and the SDK) sit behind the same gate,
so every case runs against both.
"""

from __future__ import annotations

import json
import tomllib

import httpx
import pytest

from sidecars.common import __version__
from sidecars.common.wire import BATCH, check_message

from .conftest import redis_env
from .helpers import REPO, SidecarProcess

pytestmark = pytest.mark.slow

VERSION = "2025-11-25"


@pytest.fixture(scope="module", params=["fast", "sdk"])
def sidecar(request, redis_server):
    env = redis_env(redis_server, MCP_FAST_PATH="true" if request.param == "fast" else "false")
    with SidecarProcess("redis", env) as proc:
        yield proc


def post(sidecar: SidecarProcess, body, *, version: str = VERSION) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": version, **sidecar.headers}
    return httpx.post(sidecar.url, content=content, headers=headers, timeout=10)


PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "dbsize", "arguments": {}}}



def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


# (name, body, JSON-RPC code, a word the message must contain)
MALFORMED = [
    ("batch", [PING, {**PING, "id": 2}], -32600, "batches are not supported"),
    ("batch-of-calls", [CALL], -32600, "batches are not supported"),
    ("empty-batch", [], -32600, "batches are not supported"),
    ("string", "ping", -32600, "one JSON-RPC 2.0 object"),
    ("number", 42, -32600, "one JSON-RPC 2.0 object"),
    ("null", None, -32600, "one JSON-RPC 2.0 object"),
    ("empty-object", {}, -32600, "jsonrpc"),
    ("no-jsonrpc", {"id": 1, "method": "ping"}, -32600, "jsonrpc"),
    ("jsonrpc-1.0", {"jsonrpc": "1.0", "id": 1, "method": "ping"}, -32600, "jsonrpc"),
    ("id-null", {"jsonrpc": "2.0", "id": None, "method": "ping"}, -32600, "null"),
    ("id-null-call", {**CALL, "id": None}, -32600, "null"),
    ("id-float", {**PING, "id": 1.5}, -32600, '"id"'),
    ("id-bool", {**PING, "id": True}, -32600, '"id"'),
    ("id-object", {**PING, "id": {"a": 1}}, -32600, '"id"'),
    ("method-int", {"jsonrpc": "2.0", "id": 1, "method": 5}, -32600, '"method"'),
    ("method-null-notification", {"jsonrpc": "2.0", "method": None}, -32600, '"method"'),
    ("params-array", {**CALL, "params": ["dbsize"]}, -32600, '"params"'),
    ("params-string", {**CALL, "params": "dbsize"}, -32600, '"params"'),
    ("response-without-id", {"jsonrpc": "2.0", "result": {}}, -32600, '"result"'),
    ("result-and-error", {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {"code": 1, "message": "x"}},
     -32600, '"result"'),
    ("not-json", b"{not json", -32700, "Parse error"),
    ("empty-body", b"", -32700, "Parse error"),
    ("not-utf8", b'{"jsonrpc":"2.0","id":1,"method":"\xff"}', -32700, "Parse error"),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, -32700, "Parse error"),
    # Before, the SDK echoed an unknown method whole: a 100 KB name came back as a 100 KB -32601.
    ("method-100k", {"jsonrpc": "2.0", "id": 1, "method": "x" * 100_000}, -32600, '"method"'),
    ("result-not-object", {"jsonrpc": "2.0", "id": 1, "result": None}, -32600, '"result"'),
    ("error-not-object", {"jsonrpc": "2.0", "id": 1, "error": "x"}, -32600, '"error"'),
    # Both paths parse alike (the SDK's parser): before, the fast path ran these calls while the SDK
    # path refused them.
    ("lone-surrogate", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get",'
                       b'"arguments":{"key":"\\udc80"}}}', -32700, "Parse error"),
    ("nested-300", {**CALL, "params": {"name": "get", "arguments": {"key": "k", "x": _nested(300)}}},
     -32700, "Parse error"),
]


@pytest.mark.parametrize("name,body,code,word", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_messages_get_400_and_one_short_jsonrpc_error(sidecar, name, body, code, word):
    resp = post(sidecar, body)
    assert resp.status_code == 400, resp.text[:300]
    assert resp.headers["content-type"] == "application/json"
    answer = resp.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] is None and set(answer) == {"jsonrpc", "id", "error"}
    assert answer["error"]["code"] == code
    assert word in answer["error"]["message"]
    assert len(resp.content) < 300  # no pydantic report, nothing of the input echoed
    assert "validation error" not in resp.text.lower()


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18"])
def test_batches_are_refused_whatever_the_protocol_version(sidecar, version):
    """2025-03-26 allowed batches; we refuse them as a whole under every version (sidecars/README.md)."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "batcher", "version": "1"}}}
    for batch in ([init], [PING, CALL], [{"jsonrpc": "2.0", "method": "notifications/initialized"}]):
        resp = post(sidecar, batch, version=version)
        assert resp.status_code == 400
        assert resp.json()["error"] == {"code": -32600, "message": "Invalid Request: " + BATCH}


def test_well_formed_messages_still_work(sidecar, redis_server):
    redis_server.command("SET", "wire-key", "v")
    ping = post(sidecar, PING)
    assert ping.status_code == 200 and ping.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
    call = post(sidecar, {**CALL, "id": "call-1", "params": {"name": "get", "arguments": {"key": "wire-key"}}})
    assert call.status_code == 200 and call.json()["id"] == "call-1"
    assert call.json()["result"]["structuredContent"]["value"] == "v"
    # A notification and a client's response to a server request: accepted, nothing to answer.
    assert post(sidecar, {"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
    assert post(sidecar, {"jsonrpc": "2.0", "id": 3, "result": {}}).status_code == 202
    # "params": null reads as no params, as the SDK reads it.
    assert post(sidecar, {**PING, "params": None}).json()["result"] == {}
    # Members JSON-RPC does not define are ignored, as before.
    assert post(sidecar, {**PING, "extra": True}).json()["result"] == {}


def test_a_refused_batch_runs_none_of_its_calls(sidecar):
    calls_before = [line for line in sidecar.audit_lines() if line.get("event") == "tool_call"]
    batch = [{**CALL, "params": {"name": "get", "arguments": {"key": "wire-batch"}}}, CALL]
    assert post(sidecar, batch).status_code == 400
    assert post(sidecar, PING).status_code == 200  # the audit line of a call would be written by now
    assert [line for line in sidecar.audit_lines() if line.get("event") == "tool_call"] == calls_before


def test_a_wrong_content_type_is_left_to_the_sdk(sidecar):
    resp = httpx.post(sidecar.url, content=b"[]", timeout=10, headers={
        "Content-Type": "text/plain", "Accept": "application/json, text/event-stream", **sidecar.headers})
    assert resp.status_code in (400, 415) and "Content-Type" in resp.text


def test_auth_is_checked_before_the_body(sidecar):
    """The gate sits behind AccessControl: no token, no parse, no JSON-RPC error."""
    resp = httpx.post(sidecar.url, content=b"[]", timeout=10, headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
    assert resp.status_code == 401


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25"])
def test_initialize_advertises_tools_only_and_the_package_version(sidecar, version):
    resp = post(sidecar, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}},
        version=version)
    assert resp.status_code == 200, resp.text[:300]
    result = resp.json()["result"]
    assert result["protocolVersion"] == version
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert result["serverInfo"]["name"] == "mcp-redis"
    assert result["serverInfo"]["version"] == __version__ != ""


NOT_SERVED = {
    "prompts/list": {}, "prompts/get": {"name": "p"}, "resources/list": {}, "resources/templates/list": {},
    "resources/read": {"uri": "file:///etc/passwd"}, "resources/subscribe": {"uri": "file:///x"},
    "completion/complete": {"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": "b"}},
    "logging/setLevel": {"level": "debug"},
}


@pytest.mark.parametrize("method", sorted(NOT_SERVED))
def test_methods_of_capabilities_not_advertised_are_method_not_found(sidecar, method):
    resp = post(sidecar, {"jsonrpc": "2.0", "id": 9, "method": method, "params": NOT_SERVED[method]})
    assert resp.status_code == 200
    assert resp.json()["error"]["code"] == -32601, resp.text[:300]
    assert resp.json()["id"] == 9


def test_package_version_matches_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert __version__ == pyproject["project"]["version"]


def test_check_message_accepts_each_kind_of_message():
    """The envelope check in isolation (the HTTP cases above cover its wiring)."""
    assert check_message(b'{"jsonrpc":"2.0","id":"a","method":"ping"}')["id"] == "a"
    assert check_message(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')["method"]
    assert check_message(b'{"jsonrpc":"2.0","id":0,"error":{"code":-1,"message":"m"}}')["id"] == 0
    assert check_message(b'{"jsonrpc":"2.0","id":-5,"method":"tools/list","params":{}}')["id"] == -5


def test_the_parsed_message_does_not_outlive_its_request():
    """uvicorn keeps a keep-alive connection's last scope: a parsed body left in it held up to 1 MiB per
    idle connection (tests/security/test_slowloris.py's memory bound caught it: VmHWM 121 MiB > 110)."""
    import asyncio

    from sidecars.common.wire import MESSAGE_KEY, JsonRpcGate

    seen = []

    async def inner(scope, receive, send):
        seen.append(scope[MESSAGE_KEY]["method"])

    async def receive():
        return {"type": "http.request", "body": json.dumps(CALL).encode(), "more_body": False}

    async def send(message):
        raise AssertionError(message)

    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(JsonRpcGate(inner)(scope, receive, send))
    assert seen == ["tools/call"] and MESSAGE_KEY not in scope
