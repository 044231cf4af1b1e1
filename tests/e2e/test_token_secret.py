"""The sidecars' token Secret against the real API server: the operator provisions it once per
namespace and never overwrites it; ``mcp-sidecar rotate-token`` replaces it (issue 11, part 1)."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.operator_process import OperatorProcess

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BACKEND = "mcp-sidecar.dox/backend"
SECRET = "mcp-sidecar-token"


class Operator(OperatorProcess):
    """``mcp-sidecar operator`` as cluster admin (RBAC is test_operator_rbac's concern)."""

    def __init__(self, control_plane, workdir: Path):
        super().__init__(workdir, control_plane.kubeconfig, "--no-leader-election", "--resync-seconds", "3600")


def deployment(name: str, namespace: str, labelled: bool = True) -> dict:
    labels = {"app": name, **({BACKEND: "redis"} if labelled else {})}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}}}}


def secret(cp, namespace: str) -> dict | None:
    status, body = cp.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{SECRET}")
    return body if status == 200 else None


def token_of(body: dict) -> str:
    return base64.b64decode(body["data"]["token"]).decode()


def events(cp, namespace: str, reason: str) -> list[dict]:
    return [e for e in cp.kubectl_json("get", "events", "-n", namespace)["items"] if e["reason"] == reason]


def companion_exists(cp, namespace: str, workload: str) -> bool:
    return cp.request("GET", f"/api/v1/namespaces/{namespace}/services/{workload}-mcp")[0] == 200


def test_operator_creates_the_token_secret_once_and_never_overwrites_it(control_plane, tmp_path, namespace):
    cp = control_plane
    bystander = namespace + "-plain"
    cp.create_namespace(bystander)
    cp.apply(deployment("plain", bystander, labelled=False))
    operator = Operator(cp, tmp_path)
    try:
        t0 = time.monotonic()
        cp.apply(deployment("cache", namespace))
        created = cp.wait_for(lambda: secret(cp, namespace), 60, "the token Secret")
        print(f"\n[token] Secret created {time.monotonic() - t0:.2f}s after the labelled Deployment (operator just started)")
        assert created["type"] == "Opaque"
        assert created["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "mcp-sidecar-injector",
                                                 "mcp-sidecar.dox/token": "true"}
        token = token_of(created)
        assert len(token) == 64 and int(token, 16) >= 0  # 256 random bits, hex
        cp.wait_for(lambda: events(cp, namespace, "MCPTokenSecretCreated"), 30, "the Event")

        # A user sets their own token; more labelled workloads arrive: the operator leaves it alone.
        cp.request("PATCH", f"/api/v1/namespaces/{namespace}/secrets/{SECRET}",
                   {"data": {"token": base64.b64encode(b"users-own-token").decode()}},
                   content_type="application/merge-patch+json")
        cp.apply(deployment("second", namespace))
        cp.wait_for(lambda: companion_exists(cp, namespace, "second"), 30, "the operator to handle the second workload")
        assert token_of(secret(cp, namespace)) == "users-own-token"
        assert len(events(cp, namespace, "MCPTokenSecretCreated")) == 1  # created once, announced once
        assert secret(cp, bystander) is None  # no labelled workload there: nothing provisioned
    finally:
        operator.stop()

    # A restarted operator (nothing remembered) finds the Secret through its create's 409: still not overwritten.
    operator = Operator(cp, tmp_path)
    try:
        cp.apply(deployment("third", namespace))
        cp.wait_for(lambda: companion_exists(cp, namespace, "third"), 60, "the restarted operator")
        assert token_of(secret(cp, namespace)) == "users-own-token"
        assert "users-own-token" not in operator.log()
    finally:
        operator.stop()
        cp.kubectl("delete", "namespace", bystander, "--wait=false", check=False)


def rotate(cp, namespace: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webhook.cli", "rotate-token", "-n", namespace,
                           "--kubeconfig", str(cp.kubeconfig), *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_rotate_token_creates_then_replaces_and_prints_the_token_only_when_asked(control_plane, namespace):
    cp = control_plane
    first = rotate(cp, namespace)
    assert first.returncode == 0, first.stderr
    created = secret(cp, namespace)
    assert created["metadata"]["labels"]["mcp-sidecar.dox/token"] == "true"
    token1 = token_of(created)
    assert first.stdout.startswith(f"created Secret {namespace}/{SECRET}") and token1 not in first.stdout
    assert "minute" in first.stdout  # how long until running sidecars see it

    cp.request("PATCH", f"/api/v1/namespaces/{namespace}/secrets/{SECRET}",
               {"data": {"other": base64.b64encode(b"kept").decode()}}, content_type="application/merge-patch+json")
    second = rotate(cp, namespace, "--show")
    assert second.returncode == 0, second.stderr
    after = secret(cp, namespace)
    token2 = token_of(after)
    assert token2 != token1 and len(token2) == 64
    assert second.stdout.startswith("rotated") and f"token: {token2}" in second.stdout
    assert base64.b64decode(after["data"]["other"]) == b"kept"  # only the key changes


def test_rotate_token_without_rights_fails_with_a_message(control_plane, tmp_path):
    cp = control_plane
    done = rotate(cp, "no-such-namespace-xyz")
    assert done.returncode == 1 and done.stderr.startswith("error: cannot rotate Secret no-such-namespace-xyz/")
    assert "Traceback" not in done.stderr
