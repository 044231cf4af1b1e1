"""Runs the official redis-mcp-server (stdio-only since 0.5) on streamable HTTP for the benchmark.

Its FastMCP (mcp 1.x) server object is imported and started with the SDK's own HTTP transport,
stateless with JSON responses like our sidecar, logging at WARNING: the same conditions for both.
Usage (inside the peer's venv): python peer_redis_http.py PORT   (REDIS_HOST/REDIS_PORT from env)
"""

import sys

from src.common.server import mcp  # the peer package's top-level module is literally named `src`

mcp.settings.host = "127.0.0.1"
mcp.settings.port = int(sys.argv[1])
mcp.settings.stateless_http = True
mcp.settings.json_response = True
mcp.settings.log_level = "WARNING"
mcp.run(transport="streamable-http")
