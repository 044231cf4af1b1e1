"""`mcp-sidecar connect` on real pods (issue 10): one step from a labelled workload to a working MCP
client that we did not write.

The example Redis StatefulSet (labelled) -> the operator's companion Service redis-mcp and token Secret
-> `mcp-sidecar connect redis -n NS --write-mcp-json FILE` as a subprocess, with the real
`kubectl port-forward` -> the MCP Inspector CLI runs the command connect printed (URL and
Authorization header as printed) and reads a key written with redis-cli -> the `.mcp.json` entry
holds the same URL and header, mode 0600 -> Ctrl-C ends connect with exit 0 and closes the port.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid

import pytest

from tests.cluster.controlplane import BIN_DIR
from tests.node import kube
from tests.node.kube import REPO

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "deploy" / "examples" / "redis-statefulset.yaml"
SELECTOR = "app.kubernetes.io/name=redis"
INSPECTOR_PREFIX = "  npx @modelcontextprotocol/inspector --cli "


def endpoints_ready(cp, namespace: str) -> bool:
    slices = cp.kubectl_json("get", "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=redis-mcp")["items"]
    return any((e.get("conditions") or {}).get("ready") for s in slices for e in s.get("endpoints") or [])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_connect_then_the_inspector_calls_a_tool_through_the_printed_setup(cp, injector, namespace, tmp_path):
    cp.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    [pod] = kube.wait_pods_ready(cp, namespace, SELECTOR, 1, containers=2, timeout=180)
    cp.wait_for(lambda: endpoints_ready(cp, namespace), 60, "redis-mcp ready endpoints (operator's companion Service)")
    kube.sidecar_token(cp, namespace)  # the operator's Secret exists before connect reads it
    key, value = f"connect:{uuid.uuid4().hex[:6]}", "read through mcp-sidecar connect"
    done = kube.exec_in(cp, namespace, pod["metadata"]["name"], "redis", "sh", "-c",
                        f'redis-cli --no-auth-warning -a "$REDIS_PASSWORD" SET {key} "{value}"')
    assert done.stdout.strip() == "OK", done.stdout + done.stderr

    mcp_json = tmp_path / ".mcp.json"
    mcp_json.write_text(json.dumps({"mcpServers": {"other": {"type": "stdio", "command": "other-server"}}}))
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhook.cli", "connect", "redis", "-n", namespace, "--port", "0",
         "--write-mcp-json", str(mcp_json), "--kubeconfig", str(cp.kubeconfig), "--kubectl", str(BIN_DIR / "kubectl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    try:
        printed = []
        while True:
            line = proc.stdout.readline()
            assert line, f"connect exited ({proc.poll()}) before its setup: {''.join(printed)}{proc.stderr.read()}"
            printed.append(line)
            if line.startswith("Wrote server"):
                break
        print(f"\n[connect] setup printed {time.monotonic() - started:.1f}s after `mcp-sidecar connect`")
        [inspector_line] = [line for line in printed if line.startswith(INSPECTOR_PREFIX)]
        argv = shlex.split(inspector_line[len(INSPECTOR_PREFIX):])
        url, rest = argv[0], argv[1:]
        assert rest[:2] == ["--transport", "http"] and rest[2] == "--header", inspector_line
        header = rest[3]
        assert header == f"Authorization: Bearer {kube.sidecar_token(cp, namespace)}"
        assert any(line.startswith(f"  claude mcp add --transport http redis {url} --header ") for line in printed), printed

        # A pod that started before the operator's Secret sees the token at the kubelet's next sync.
        kube.wait_token_accepted(url, {"Authorization": header.split(": ", 1)[1]})
        called = kube.inspector(url, "--header", header, "--method", "tools/call", "--tool-name", "get",
                                "--tool-arg", f"key={key}", home=tmp_path)
        assert called["structuredContent"]["value"] == value, called

        entries = json.loads(mcp_json.read_text())["mcpServers"]
        assert entries["other"] == {"type": "stdio", "command": "other-server"}
        assert entries["redis"] == {"type": "http", "url": url, "headers": {"Authorization": header.split(": ", 1)[1]}}
        assert stat.S_IMODE(mcp_json.stat().st_mode) == 0o600

        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert port_open(port)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, proc.stderr.read()
        assert not port_open(port), "kubectl port-forward kept running after connect stopped"
        assert header.split("Bearer ", 1)[1] not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
