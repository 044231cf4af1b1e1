"""`make demo` is the README's main job: it must keep working end to end, on both of its paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.node import why_not_runnable

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _demo(*args: str, timeout: float) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--no-wait", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "\033[" not in proc.stdout  # no ANSI codes when stdout is not a terminal
    return proc.stdout


def test_demo_on_a_real_node_label_statefulset_pod_2_of_2_and_mcp_call(control_plane):
    """As root: the chart's injector pods, `kubectl label statefulset`, redis-0 2/2 Ready, MCP via port-forward."""
    reason = why_not_runnable()
    if reason and "not built" not in reason:
        pytest.skip(f"real-node demo skipped: {reason}")
    out = _demo(timeout=900)
    assert "kubectl label statefulset redis -n demo mcp-sidecar.dox/backend=redis" in out.replace("$ kubectl", "kubectl")
    assert "redis-0: 2/2 Ready (containers redis, mcp-sidecar)" in out
    assert '"reachable": true' in out  # /health of the sidecar in the pod, through the companion Service
    assert "tokenless POST /mcp -> 401" in out  # auth on by default; the session used the operator's Secret
    assert "tools/call get" in out and "hello from the Redis behind the MCP sidecar" in out
    assert "stopped cleanly." in out


def test_demo_without_a_node_injects_and_answers_an_mcp_call(control_plane):  # control_plane: binaries are built
    out = _demo("--no-node", timeout=300)
    assert "redis,mcp-sidecar" in out  # kubectl get pods: the stored pod has the sidecar
    assert '"valueFrom": {"secretKeyRef": {"key": "redis-password", "name": "redis"}}' in out
    assert '"reachable": true' in out  # /health of the sandboxed sidecar against the real Redis
    assert "created Secret demo/mcp-sidecar-token" in out  # rotate-token, as an inject -f user would
    assert "tokenless POST /mcp -> 401" in out and '"auth": "token"' in out
    assert "tools/call get" in out and "hello from the Redis behind the MCP sidecar" in out
    assert "stopped cleanly." in out
