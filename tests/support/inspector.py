"""The MCP Inspector CLI (npm ``@modelcontextprotocol/inspector``): an MCP client we did not write.

Installed once into ``.cache/npm`` (npm's own progress shows). Shared by the sidecar tests and the
real-node tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSPECTOR_VERSION = "2.12.0"
NPM_PREFIX = REPO / ".cache" / "npm"


class InspectorUnavailable(RuntimeError):
    pass


def inspector_command() -> list[str]:
    """``node <launcher> --cli``, installing the Inspector first if needed."""
    if shutil.which("npm") is None:
        raise InspectorUnavailable("npm is not installed")
    launcher = NPM_PREFIX / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build"
    marker = NPM_PREFIX / f".inspector-{INSPECTOR_VERSION}"
    if not marker.exists():
        NPM_PREFIX.mkdir(parents=True, exist_ok=True)
        print(f"installing @modelcontextprotocol/inspector@{INSPECTOR_VERSION} into {NPM_PREFIX}", file=sys.stderr)
        subprocess.run(["npm", "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund",
                        f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}"], check=True, timeout=600)
        marker.touch()
    return ["node", str(launcher / "index.js"), "--cli"]


def run_inspector(url: str, *args: str, home: Path, timeout: float = 120) -> dict:
    """One Inspector CLI call over streamable HTTP; returns its JSON output (asserts exit 0)."""
    env = {**os.environ, "HOME": str(home), "MCP_CATALOG_PATH": str(home / "mcp.json")}
    done = subprocess.run([*inspector_command(), url, "--transport", "http", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)
