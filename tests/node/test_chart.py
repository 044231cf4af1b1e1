"""The Helm chart on a real node: the injector image built from Dockerfile.webhook runs as pods.

`helm install` -> both admission replicas and the operator Ready -> the admission pods have no
ServiceAccount token mounted, the operator has one and leads -> the API server calls the webhook
through the chart's Service (not a URL) -> `helm test` runs as a pod and passes -> `helm upgrade`
keeps the generated certificate -> `helm uninstall` leaves nothing behind.
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
    exec_in,
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
        deployments = [d["metadata"]["name"] for d in objects if d["kind"] == "Deployment"]
        [operator] = [n for n in deployments if n.endswith("-operator")]
        [deployment] = [n for n in deployments if n != operator]
        names = {"admission": deployment, "operator": operator}

        # ---- both admission replicas and the operator really run the image built from Dockerfile.webhook
        by_deployment: dict[str, list[dict]] = {"admission": [], "operator": []}
        for p in pods(cp, RELEASE_NS, f"app.kubernetes.io/instance={RELEASE}"):
            owner = p["metadata"]["name"].rsplit("-", 2)[0]  # <deployment>-<replicaset hash>-<suffix>
            for role, name in names.items():
                if owner == name:
                    by_deployment[role].append(p)
        assert [len(by_deployment["admission"]), len(by_deployment["operator"])] == [2, 1], by_deployment
        for p in by_deployment["admission"] + by_deployment["operator"]:
            assert p["status"]["phase"] == "Running"
            assert ready_count(p) == (1, 1)
            [status] = p["status"]["containerStatuses"]
            assert status["image"] == f"docker.io/mcp/sidecar-injector:{project_version()}"
            assert status["restartCount"] == 0

        # ---- issue 11: the pod serving the unauthenticated admission endpoint holds no API token;
        # the operator (its own pod and ServiceAccount) has one and holds the Lease
        token_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
        probe = f"import os, sys; sys.exit(0 if os.path.exists({token_dir!r}) else 3)"
        for p in by_deployment["admission"]:
            assert not [v for v in p["spec"]["volumes"] if v["name"].startswith("kube-api-access")]
            done = exec_in(cp, RELEASE_NS, p["metadata"]["name"], "injector", "python", "-c", probe, check=False)
            assert done.returncode == 3, (done.returncode, done.stderr)
        [op] = by_deployment["operator"]
        assert op["spec"]["serviceAccountName"] != by_deployment["admission"][0]["spec"]["serviceAccountName"]
        done = exec_in(cp, RELEASE_NS, op["metadata"]["name"], "operator", "python", "-c", probe, check=False)
        assert done.returncode == 0, (done.returncode, done.stderr)
        cp.wait_for(lambda: cp.kubectl_json("get", "lease", "mcp-sidecar-injector-operator", "-n", RELEASE_NS)["spec"].get("holderIdentity"),
                    60, "the operator to take its Lease")
        logs = cp.kubectl("logs", "-n", RELEASE_NS, op["metadata"]["name"], check=False).stdout
        assert "cannot" not in logs or "system:serviceaccount:" not in logs, logs[-3000:]

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
