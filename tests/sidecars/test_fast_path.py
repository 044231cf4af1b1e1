"""The tools/call short path answers exactly as the SDK path does (MCP_FAST_PATH=false is the SDK)."""

from __future__ import annotations

import httpx
import pytest

from .conftest import redis_env
from .helpers import SidecarProcess

pytestmark = pytest.mark.slow

REQUESTS = [
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get", "arguments": {"key": "fp"}}},
    {"jsonrpc": "2.0", "id": "s", "method": "tools/call", "params": {"name": "hgetall", "arguments": {"key": "fp"}}},
    {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get", "arguments": {"key": ""}}},
    {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "no_such_tool", "arguments": {}}},
    {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "set", "arguments": {"key": "x"}}},
    {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "dbsize"}},
    {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}},
    {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "get", "arguments": {"key": "fp"},
                                                                   "_meta": {"progressToken": 1}}},
]


def answers(sidecar: SidecarProcess, version: str) -> list[tuple[int, object]]:
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": version, **sidecar.headers}
    out = []
    for body in REQUESTS:
        resp = httpx.post(sidecar.url, json=body, headers=headers, timeout=10)
        out.append((resp.status_code, resp.json() if resp.content else None))
    out.append((httpx.post(sidecar.url, content=b"{not json", headers={**headers, "Content-Type": "application/json"},
                           timeout=10).status_code, None))
    return out


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_short_path_and_sdk_path_answer_identically(redis_server, version):
    redis_server.command("SET", "fp", "value")
    with SidecarProcess("redis", redis_env(redis_server, MCP_FAST_PATH="false")) as sdk, \
            SidecarProcess("redis", redis_env(redis_server)) as fast:
        expected, actual = answers(sdk, version), answers(fast, version)
        assert actual == expected
        assert expected[0][1]["result"]["structuredContent"]["value"] == "value"
        assert expected[2][1]["result"]["isError"] is True
        # Both paths feed the same metrics and audit trail.
        assert 'mcp_tool_calls_total{outcome="ok",tool="get"} 2.0' in fast.get("/metrics").text
        assert [line["tool"] for line in fast.audit_lines() if line.get("event") == "tool_call"] == \
               [line["tool"] for line in sdk.audit_lines() if line.get("event") == "tool_call"]
