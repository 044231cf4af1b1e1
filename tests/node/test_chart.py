"""The Helm chart on a real node: the injector image built from Dockerfile.webhook runs as pods.

`helm install` -> both replicas Ready -> the API server calls the webhook through the chart's
Service (not a URL) -> `helm test` runs as a pod and passes -> `helm upgrade` keeps the generated
certificate -> `helm uninstall` leaves nothing behind.
"""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from tests.node.kube import (
    BACKEND_LABEL,
    CHART,
    WEBHOOK_NAME,
    Helm,
    container_names,
    pods,
    project_version,
    ready_count,
)

pytestmark = pytest.mark.slow

RELEASE, RELEASE_NS = "mcp-chart", "mcp-chart-system"


def test_chart_install_test_upgrade_uninstall(cp, namespace, tmp_path):
    helm = Helm(cp, tmp_path / "helm-home")
    image = ("--set", "image.repository=mcp/sidecar-injector", "--set", f"image.tag={project_version()}")
    values = (*image, "--set", f"test.namespace={namespace}")
    installed = False
    try:
        helm("install", RELEASE, str(CHART), "-n", RELEASE_NS, "--create-namespace", "--wait", "--timeout", "5m",
             *values)
        installed = True
        objects = [d for d in yaml.safe_load_all(helm("get", "manifest", RELEASE, "-n", RELEASE_NS).stdout) if d]
        deployment = next(d for d in objects if d["kind"] == "Deployment")["metadata"]["name"]

        # ---- both replicas really run the image built from Dockerfile.webhook
        running = [p for p in pods(cp, RELEASE_NS, f"app.kubernetes.io/instance={RELEASE}")
                   if p["metadata"]["name"].startswith(deployment)]
        assert len(running) == 2, [p["metadata"]["name"] for p in running]
        for p in running:
            assert p["status"]["phase"] == "Running"
            assert ready_count(p) == (1, 1)
            [status] = p["status"]["containerStatuses"]
            assert status["image"] == f"docker.io/mcp/sidecar-injector:{project_version()}"
            assert status["restartCount"] == 0

        # ---- the API server calls the webhook through the chart's Service
        mwc = next(d for d in objects if d["kind"] == "MutatingWebhookConfiguration")["metadata"]["name"]
        [hook] = cp.kubectl_json("get", "mutatingwebhookconfiguration", mwc)["webhooks"]
        assert "url" not in hook["clientConfig"]
        assert hook["clientConfig"]["service"]["namespace"] == RELEASE_NS
        cp.wait_for_webhook(WEBHOOK_NAME, namespace=namespace, timeout=60)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "probe", "labels": {BACKEND_LABEL: "redis"}},
               "spec": {"automountServiceAccountToken": False,
                        "containers": [{"name": "redis", "image": "redis:7.4"}]}}
        dry = json.loads(cp.kubectl("create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
                                    input=json.dumps(pod)).stdout)
        assert "mcp-sidecar" in container_names(dry)

        # ---- `helm test` runs as a pod (in-cluster API access through the kubernetes Service) and passes
        tested = helm("test", RELEASE, "-n", RELEASE_NS, "--timeout", "3m")
        assert "Phase:          Succeeded" in tested.stdout, tested.stdout

        # ---- upgrade keeps the generated CA and serving certificate, and the new pods serve with it
        secret = next(d for d in objects if d["kind"] == "Secret")["metadata"]["name"]
        before = cp.kubectl_json("get", "secret", "-n", RELEASE_NS, secret)["data"]
        helm("upgrade", RELEASE, str(CHART), "-n", RELEASE_NS, "--wait", "--timeout", "5m", *values,
             "--set", "logLevel=debug")
        assert cp.kubectl_json("get", "secret", "-n", RELEASE_NS, secret)["data"] == before
        [hook] = cp.kubectl_json("get", "mutatingwebhookconfiguration", mwc)["webhooks"]
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == base64.b64decode(before["ca.crt"])
        cp.kubectl("rollout", "status", f"deployment/{deployment}", "-n", RELEASE_NS, "--timeout=180s")
        dry = json.loads(cp.kubectl("create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
                                    input=json.dumps(pod)).stdout)
        assert "mcp-sidecar" in container_names(dry)

        # ---- uninstall leaves nothing
        helm("uninstall", RELEASE, "-n", RELEASE_NS, "--wait")
        installed = False
        selector = f"app.kubernetes.io/instance={RELEASE}"

        def nothing_left() -> bool:
            namespaced = cp.kubectl("get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,"
                                    "poddisruptionbudgets,leases", "-A", "-l", selector, "-o", "name").stdout.strip()
            cluster = cp.kubectl("get", "clusterroles,clusterrolebindings,mutatingwebhookconfigurations", "-l",
                                 selector, "-o", "name").stdout.strip()
            left_pods = cp.kubectl("get", "pods", "-n", RELEASE_NS, "-o", "name").stdout.strip()
            return not (namespaced or cluster or left_pods)

        cp.wait_for(nothing_left, 120, "every object and pod of the release to be gone")
    finally:
        if installed:
            helm("uninstall", RELEASE, "-n", RELEASE_NS, check=False)
        cp.kubectl("delete", "namespace", RELEASE_NS, "--wait=false", "--ignore-not-found=true", check=False)
