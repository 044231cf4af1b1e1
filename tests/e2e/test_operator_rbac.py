"""The operator works with exactly the RBAC the Helm chart grants its ServiceAccount (issue 5)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.webhook_process import WebhookProcess

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "mcp-sidecar-injector"
RELEASE_NAMESPACE = "mcp-system"
BACKEND = "mcp-sidecar.dox/backend"


def chart_rbac(control_plane) -> str:
    """The chart's ServiceAccount and RBAC objects, healing on (the widest operator grant)."""
    helm = control_plane.bin_dir / "helm3"
    return subprocess.run(
        [str(helm), "template", "injector", str(CHART), "--namespace", RELEASE_NAMESPACE, "--set", "operator.healing=true",
         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout


def service_account_kubeconfig(control_plane, tmp_path: Path, service_account: str) -> Path:
    token = control_plane.kubectl("create", "token", service_account, "-n", RELEASE_NAMESPACE, "--duration=1h").stdout.strip()
    ca = tmp_path / "ca.crt"
    ca.write_bytes(control_plane.ca_pem)
    path = tmp_path / "operator.kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": control_plane.server, "certificate-authority": str(ca)}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": RELEASE_NAMESPACE}}],
        "users": [{"name": "sa", "user": {"token": token}}],
    }))
    return path


def test_operator_needs_no_more_than_the_chart_grants(control_plane, tmp_path):
    cp = control_plane
    cp.create_namespace(RELEASE_NAMESPACE)
    cp.apply(chart_rbac(cp), "-n", RELEASE_NAMESPACE)
    service_account = cp.kubectl_json("get", "serviceaccounts", "-n", RELEASE_NAMESPACE, "-l", "app.kubernetes.io/instance=injector")["items"][0]["metadata"]["name"]
    kubeconfig = service_account_kubeconfig(cp, tmp_path, service_account)
    namespace = "e2e-rbac"
    cp.create_namespace(namespace)

    # the webhook path stays registered but "down" at first, so a pod is missed and healing has work
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    dead = silent.getsockname()[1]
    silent.close()
    process = WebhookProcess(tmp_path / "injector", kubeconfig=kubeconfig,
                             extra_args=("--heal", "--heal-interval", "1", "--heal-grace", "1", "--resync-seconds", "2",
                                         "--leader-election-namespace", RELEASE_NAMESPACE)).start()
    try:
        cp.register_mutating_webhook(f"https://127.0.0.1:{dead}/mutate", process.ca_pem, timeout_seconds=2, wait=False)
        time.sleep(2)
        workload = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kv", "namespace": namespace, "labels": {BACKEND: "redis"}},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "kv"}},
                             "template": {"metadata": {"labels": {"app": "kv"}},
                                          "spec": {"automountServiceAccountToken": False, "containers": [{"name": "redis", "image": "redis:7"}]}}}}
        cp.apply(workload)
        # propagation (patch on apps), companion Service (services), Events, namespace reads, Lease
        cp.wait_for(lambda: cp.kubectl_json("get", "deployment", "kv", "-n", namespace)["spec"]["template"]["metadata"]["labels"].get(BACKEND), 30, "propagation")
        cp.wait_for(lambda: cp.kubectl_json("get", "service", "kv-mcp", "-n", namespace), 30, "companion Service")
        cp.wait_for(lambda: [e for e in cp.kubectl_json("get", "events", "-n", namespace)["items"] if e["reason"] == "MCPSidecarMissed"], 60, "a Missed event")
        lease = cp.kubectl_json("get", "lease", "mcp-sidecar-injector-operator", "-n", RELEASE_NAMESPACE)
        assert lease["spec"]["holderIdentity"]
        # webhook back: the dry-run probe passes and healing evicts (pods/eviction) -> injected pod
        cp.register_mutating_webhook(process.url + "/mutate", process.ca_pem)
        cp.wait_for(lambda: any(c["name"] == "mcp-sidecar" for p in cp.kubectl_json("get", "pods", "-n", namespace, "-l", "app=kv")["items"]
                                for c in p["spec"]["containers"]), 90, "healing")
        # RBAC denials read 'is forbidden: User "system:serviceaccount:..." cannot <verb> resource ...'
        denials = [line for line in process.log().splitlines() if "system:serviceaccount:" in line and "cannot" in line]
        denials += [line for line in process.log().splitlines() if "healing needs RBAC" in line]
        assert denials == [], "\n".join(denials[:20])
    finally:
        cp.unregister_mutating_webhook()
        process.stop()
        cp.kubectl("delete", "namespace", namespace, RELEASE_NAMESPACE, "--wait=false", check=False)
