"""A short path for the hot request: a single ``tools/call`` from a client on a classic protocol version.

In stateless mode the SDK builds a transport, a session and a task group for every POST, which
costs more than the Redis round trip it wraps. For the one request an AI client sends over and over
we call the same ``MCPServer.call_tool`` directly and write the same JSON-RPC response. It sits
behind ``wire.JsonRpcGate``, which has parsed the body and refused malformed messages; anything else
(initialize, tools/list, notifications, requests carrying ``_meta``, the 2026 protocol) goes on
untouched into the SDK, so protocol handling stays the SDK's.
Set ``MCP_FAST_PATH=false`` to route everything through the SDK.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent
from mcp_types.methods import serialize_server_result

from .wire import MESSAGE_KEY

# Versions whose tools/call is a plain request/response in JSON mode (no per-request envelope).
CLASSIC_VERSIONS = frozenset({b"2025-03-26", b"2025-06-18", b"2025-11-25"})


class FastToolCalls:
    def __init__(self, app: Any, server: MCPServer, path: str = "/mcp"):
        self.app = app
        self.server = server
        self.path = path
        # What the SDK's call_tool builds for every call when given no context (a pydantic model: a
        # tenth of the short path's own work). Built once: it holds no request state, and no tool
        # takes a context argument (tools.ToolRegistry registers plain keyword functions).
        self.context = Context(mcp_server=server, subscriptions=getattr(server, "_subscriptions", None))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        eligible = (
            headers.get(b"mcp-protocol-version") in CLASSIC_VERSIONS
            and headers.get(b"content-type", b"").split(b";")[0].strip() == b"application/json"
            and b"application/json" in headers.get(b"accept", b"")
            and b"mcp-session-id" not in headers
        )
        if not eligible:
            await self.app(scope, receive, send)
            return
        # JsonRpcGate (in front) parsed and checked the message: no second parse here.
        request = _tool_call(scope.get(MESSAGE_KEY))
        if request is None:
            await self.app(scope, receive, send)
            return
        result = await self._call(request["params"]["name"], request["params"].get("arguments") or {})
        # The SDK's own per-version sieve, so the wire form is exactly what the SDK path would send.
        version = headers[b"mcp-protocol-version"].decode()
        wire = serialize_server_result(
            "tools/call", version, result.model_dump(by_alias=True, mode="json", exclude_none=True))
        payload = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": wire},
                             separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _call(self, name: str, arguments: dict) -> CallToolResult:
        """Same outcome as the SDK's tools/call handler: errors become ``isError`` results."""
        try:
            result = await self.server.call_tool(name, arguments, self.context)
        except MCPError:
            raise
        except Exception as exc:  # noqa: BLE001 - ToolError and crashes alike, as the SDK does
            return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
        return result


def _tool_call(msg: Any) -> dict | None:
    """The request if it is one plain tools/call, else None (the SDK then handles it)."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or msg.get("method") != "tools/call":
        return None
    params = msg.get("params")
    if (not isinstance(msg.get("id"), (int, str)) or isinstance(msg.get("id"), bool) or not isinstance(params, dict)
            or not isinstance(params.get("name"), str) or "_meta" in params or "task" in params
            or not isinstance(params.get("arguments", {}), dict) or set(msg) - {"jsonrpc", "id", "method", "params"}):
        return None
    return msg
