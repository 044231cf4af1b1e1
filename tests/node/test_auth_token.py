"""Auth on a real kubelet (issue 11, part 1): the operator's token Secret reaches the sidecar as a
mounted file, MCP without it is refused, and `mcp-sidecar rotate-token` reaches the running sidecar
through the kubelet's volume update, without a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.node import kube

pytestmark = pytest.mark.slow

LIST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()


def status_with(url: str, token: str | None) -> int:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-11-25", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=LIST, headers=headers), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_token_from_the_operator_secret_and_rotation_without_restart(cp, injector, namespace):
    cp.apply(kube.redis_secret("auth-password"), "-n", namespace)
    cp.apply({"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "redis", "labels": {kube.BACKEND_LABEL: "redis", "app": "auth"}},
              "spec": kube.redis_pod_spec()}, "-n", namespace)
    [pod] = kube.wait_pods_ready(cp, namespace, "app=auth", timeout=180)
    sidecar = next(c for c in pod["spec"]["containers"] + (pod["spec"].get("initContainers") or [])
                   if c["name"] == "mcp-sidecar")
    assert {"name": "MCP_AUTH_TOKEN_FILE", "value": "/var/run/secrets/mcp-sidecar/token"} in sidecar["env"]
    restarts = {s["name"]: s["restartCount"] for s in pod["status"]["containerStatuses"]}

    old = kube.sidecar_token(cp, namespace)
    with kube.port_forward(cp, namespace, "pod/redis", 9000) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        kube.wait_token_accepted(url, {"Authorization": f"Bearer {old}"})
        assert status_with(url, old) == 200
        assert status_with(url, None) == 401 and status_with(url, "guess") == 401
        health = kube.wait_http(f"http://127.0.0.1:{port}/health")
        assert health["auth"] == "token", health

        done = subprocess.run([sys.executable, "-m", "webhook.cli", "rotate-token", "-n", namespace,
                               "--kubeconfig", str(cp.kubeconfig)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        new = kube.sidecar_token(cp, namespace)
        assert new != old and new not in done.stdout
        t0 = time.monotonic()
        while status_with(url, new) != 200:
            assert time.monotonic() - t0 < 180, "the rotated token never reached the running sidecar"
            time.sleep(2)
        seen_after = time.monotonic() - t0
        assert status_with(url, old) == 401
    print(f"\n[auth] rotated token accepted by the running sidecar {seen_after:.0f}s after rotate-token")
    [pod] = kube.pods(cp, namespace, "app=auth")
    assert {s["name"]: s["restartCount"] for s in pod["status"]["containerStatuses"]} == restarts  # no restart
