"""The MCP Inspector CLI (npm ``@modelcontextprotocol/inspector``): an MCP client we did not write.

Installed once into ``.cache/npm`` (tests/support/node_js.py; npm's own progress shows). Shared by
the sidecar tests and the real-node tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.node_js import NPM_CACHE, NodeUnavailable, npm_install

INSPECTOR_VERSION = "2.12.0"
NPM_PREFIX = NPM_CACHE  # the Inspector's prefix predates the per-tool ones: kept, so existing caches stay valid


class InspectorUnavailable(RuntimeError):
    pass


def inspector_command() -> list[str]:
    """``node <launcher> --cli``, installing the Inspector first if needed."""
    try:
        modules = npm_install(NPM_PREFIX, {"@modelcontextprotocol/inspector": INSPECTOR_VERSION},
                              f".inspector-{INSPECTOR_VERSION}")
    except NodeUnavailable as exc:
        raise InspectorUnavailable(str(exc)) from None
    launcher = modules / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build"
    return ["node", str(launcher / "index.js"), "--cli"]


def run_inspector(url: str, *args: str, home: Path, timeout: float = 120) -> dict:
    """One Inspector CLI call over streamable HTTP; returns its JSON output (asserts exit 0)."""
    env = {**os.environ, "HOME": str(home), "MCP_CATALOG_PATH": str(home / "mcp.json")}
    done = subprocess.run([*inspector_command(), url, "--transport", "http", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)
