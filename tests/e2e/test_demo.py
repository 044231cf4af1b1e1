"""`make demo` is the README's main job: it must keep working end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_demo_injects_and_answers_an_mcp_call(control_plane):  # control_plane: binaries are built
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--no-wait"], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "redis,mcp-sidecar" in out  # kubectl get pods: the stored pod has the sidecar
    assert '"valueFrom": {"secretKeyRef": {"key": "redis-password", "name": "redis"}}' in out
    assert '"reachable": true' in out  # /health of the sandboxed sidecar against the real Redis
    assert "tools/call get" in out and "hello from the Redis behind the MCP sidecar" in out
    assert "stopped cleanly." in out
