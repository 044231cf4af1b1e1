"""A minimal MCP-over-HTTP client for benchmarks: the same few lines of JSON-RPC against every server.

It speaks just enough of streamable HTTP to be fair to all of them: ``initialize`` (keeping the
``Mcp-Session-Id`` when a server hands one out), ``notifications/initialized``, then ``tools/call``
over one keep-alive connection, reading either a JSON body or the first SSE ``data:`` event.
aiohttp rather than httpx: httpx's async client alone added ~1.6 ms per call on this machine,
which would hide the servers' differences.
"""

from __future__ import annotations

import itertools
import json

import aiohttp

PROTOCOL = "2025-06-18"


class McpHttpClient:
    def __init__(self, url: str, client: aiohttp.ClientSession, token: str | None = None):
        self.url = url
        self.http = client
        self.headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                        "MCP-Protocol-Version": PROTOCOL}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._ids = itertools.count(1)

    async def _post(self, message: dict) -> dict | None:
        async with self.http.post(self.url, data=json.dumps(message), headers=self.headers) as resp:
            resp.raise_for_status()
            text = await resp.text()
            if "id" not in message:
                return None
            if resp.headers.get("content-type", "").startswith("text/event-stream"):
                for line in text.splitlines():
                    if line.startswith("data:"):
                        data = json.loads(line[5:])
                        if data.get("id") == message["id"]:
                            return data
                raise RuntimeError("no response event")
            return json.loads(text)

    async def initialize(self) -> dict:
        msg = {"jsonrpc": "2.0", "id": next(self._ids), "method": "initialize",
               "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                          "clientInfo": {"name": "bench", "version": "1"}}}
        async with self.http.post(self.url, data=json.dumps(msg), headers=self.headers) as resp:
            resp.raise_for_status()
            await resp.read()
            if sid := resp.headers.get("mcp-session-id"):
                self.headers["Mcp-Session-Id"] = sid
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return {}

    async def call(self, tool: str, args: dict) -> dict:
        data = await self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/call",
                                 "params": {"name": tool, "arguments": args}})
        if "error" in data:
            raise RuntimeError(f"{tool}: {data['error']}")
        result = data["result"]
        if result.get("isError"):
            raise RuntimeError(f"{tool}: {result['content']}")
        return result

    async def list_tools(self) -> list[dict]:
        data = await self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/list", "params": {}})
        return data["result"]["tools"]
