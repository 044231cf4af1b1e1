"""End-to-end: the Helm chart installed into the real local control plane (issue 6, "Validation").

For Helm 3.19 and Helm 4.3 in turn: `helm install` creates every rendered object; the chart's
MutatingWebhookConfiguration, pointed (values `webhook.url` + `webhook.caBundle`) at a real
`mcp-sidecar serve` on loopback, makes the API server inject a labelled pod; the `helm test` script
passes with the hook's own ServiceAccount and RBAC; `helm upgrade` keeps the generated certificate
(lookup); `helm uninstall` leaves no object of the chart behind, cluster-scoped ones included.

The chart's own Deployment pods stay Pending (no scheduler/kubelet here), which is why the webhook
is served by a local process instead.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.support.webhook_process import WebhookProcess

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "mcp-sidecar-injector"
BIN = REPO / ".cache" / "bin"
BACKEND = "mcp-sidecar.dox/backend"
WEBHOOK_NAME = "inject.mcp-sidecar.dox"


class Helm:
    def __init__(self, which: str, kubeconfig: Path, home: Path):
        self.path = BIN / which
        if not self.path.exists():
            pytest.skip(f"{self.path} missing: run tests/cluster/build.sh helm")
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
                    "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.path), *args], env=self.env, capture_output=True, text=True, timeout=180)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done


def manifest_objects(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def ref(doc: dict) -> tuple[str, str, str | None]:
    """(resource for kubectl, name, namespace or None for cluster-scoped)."""
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    resource = f"{doc['kind'].lower()}.{group}" if group else doc["kind"].lower()
    return resource, doc["metadata"]["name"], doc["metadata"].get("namespace")


def exists(cp, resource: str, name: str, namespace: str | None) -> bool:
    args = ["get", resource, name, "-o", "name", "--ignore-not-found=true"]
    if namespace:
        args += ["-n", namespace]
    return bool(cp.kubectl(*args).stdout.strip())


@pytest.fixture(scope="module")
def local_injector(tmp_path_factory):
    process = WebhookProcess(tmp_path_factory.mktemp("helm-injector")).start()
    yield process
    process.stop()


@pytest.mark.parametrize("which", ["helm3", "helm4"])
def test_install_inject_test_upgrade_uninstall(which, control_plane, namespace, local_injector, tmp_path):
    cp = control_plane
    helm = Helm(which, cp.kubeconfig, tmp_path / "helm-home")
    release = f"mcp-{which}"
    release_ns = f"mcp-system-{uuid.uuid4().hex[:6]}"
    cp.create_namespace(release_ns)
    ca_file = tmp_path / "dev-ca.pem"
    ca_file.write_bytes(local_injector.ca_pem)
    values = ["--set", f"webhook.url={local_injector.url}", "--set-file", f"webhook.caBundle={ca_file}",
              "--set", f"test.namespace={namespace}", "--set", "networkPolicy.enabled=true",
              "--set", f"networkPolicy.namespaces={{{namespace}}}",
              "--set", "networkPolicy.from[0].podSelector.matchLabels.role=mcp-client"]
    installed = False
    try:
        # ---- install: every rendered object exists
        out = helm("install", release, str(CHART), "-n", release_ns, *values).stdout
        installed = True
        assert "kubectl label statefulset redis mcp-sidecar.dox/backend=redis" in out  # NOTES
        objects = manifest_objects(helm("get", "manifest", release, "-n", release_ns).stdout)
        kinds = {d["kind"] for d in objects}
        assert kinds == {"ServiceAccount", "Secret", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Role",
                         "RoleBinding", "Service", "Deployment", "PodDisruptionBudget",
                         "MutatingWebhookConfiguration", "NetworkPolicy"}, kinds
        for doc in objects:
            assert exists(cp, *ref(doc)), f"{ref(doc)} not created"
        check_admission_holds_no_rights(cp, objects, release_ns)
        check_network_policy(cp, objects, namespace)

        mwc_name = next(d for d in objects if d["kind"] == "MutatingWebhookConfiguration")["metadata"]["name"]
        [hook] = cp.kubectl_json("get", "mutatingwebhookconfiguration", mwc_name)["webhooks"]
        assert hook["clientConfig"]["url"] == f"{local_injector.url}/mutate"
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == local_injector.ca_pem

        # ---- the registration works: a labelled pod is stored with the sidecar
        cp.wait_for_webhook(WEBHOOK_NAME, namespace=namespace, timeout=60)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "redis-0", "labels": {BACKEND: "redis"}},
               "spec": {"automountServiceAccountToken": False,
                        "containers": [{"name": "redis", "image": "redis:7", "ports": [{"name": "redis", "containerPort": 6379}]}]}}
        cp.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod))
        stored = cp.kubectl_json("get", "pod", "-n", namespace, "redis-0")
        names = [c["name"] for c in stored["spec"].get("initContainers", []) + stored["spec"]["containers"]]
        assert "mcp-sidecar" in names, names
        assert json.loads(stored["metadata"]["annotations"]["mcp-sidecar.dox/status"])["backend"] == "redis"
        # ... but never in the release namespace (namespaceSelector).
        pod["metadata"]["name"] = "redis-in-release-ns"
        dry = json.loads(cp.kubectl("create", "-n", release_ns, "--dry-run=server", "-o", "json", "-f", "-",
                                    input=json.dumps(pod)).stdout)
        assert [c["name"] for c in dry["spec"]["containers"]] == ["redis"]

        # ---- `helm test`'s script, with the hook's ServiceAccount and RBAC (no kubelet runs the pod here)
        run_helm_test_script(cp, helm, release, release_ns, namespace, tmp_path)

        # ---- upgrade keeps the generated CA and serving certificate (lookup)
        secret_name = next(d for d in objects if d["kind"] == "Secret")["metadata"]["name"]
        before = cp.kubectl_json("get", "secret", "-n", release_ns, secret_name)["data"]
        helm("upgrade", release, str(CHART), "-n", release_ns, *values, "--set", "logLevel=debug")
        after = cp.kubectl_json("get", "secret", "-n", release_ns, secret_name)["data"]
        assert after == before
        deployment = next(d for d in objects if d["kind"] == "Deployment" and not d["metadata"]["name"].endswith("-operator"))["metadata"]["name"]
        args = cp.kubectl_json("get", "deployment", "-n", release_ns, deployment)["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--log-level=debug" in args  # the upgrade did apply
        # Back to the in-cluster Service: the caBundle is the CA kept in the Secret.
        helm("upgrade", release, str(CHART), "-n", release_ns, "--set", f"test.namespace={namespace}")
        assert cp.kubectl_json("get", "secret", "-n", release_ns, secret_name)["data"] == before
        [hook] = cp.kubectl_json("get", "mutatingwebhookconfiguration", mwc_name)["webhooks"]
        assert hook["clientConfig"]["caBundle"] == before["ca.crt"]
        assert hook["clientConfig"]["service"]["namespace"] == release_ns

        # ---- uninstall leaves nothing behind
        helm("uninstall", release, "-n", release_ns)
        installed = False
        leftovers = [ref(d) for d in objects if exists(cp, *ref(d))]
        assert not leftovers, leftovers
        selector = f"app.kubernetes.io/instance={release}"
        kinds_to_scan = ("all,configmaps,secrets,serviceaccounts,roles.rbac.authorization.k8s.io,"
                         "rolebindings.rbac.authorization.k8s.io,poddisruptionbudgets,leases")
        cluster_kinds = "clusterroles,clusterrolebindings,mutatingwebhookconfigurations"

        def nothing_left() -> bool:
            namespaced = cp.kubectl("get", kinds_to_scan, "-A", "-l", selector, "-o", "name").stdout.strip()
            cluster = cp.kubectl("get", cluster_kinds, "-l", selector, "-o", "name").stdout.strip()
            releases = cp.kubectl("get", "secrets", "-n", release_ns, "-l", f"owner=helm,name={release}", "-o", "name").stdout.strip()
            return not (namespaced or cluster or releases)

        # Pods and ReplicaSets of the Deployment go through the garbage collector (background deletion).
        cp.wait_for(nothing_left, 60, "every object of the release to be deleted")
    finally:
        if installed:
            helm("uninstall", release, "-n", release_ns, check=False)
        cp.kubectl("delete", "namespace", release_ns, "--wait=false", "--ignore-not-found=true", check=False)


def can_i(cp, service_account: str, *args: str) -> bool:
    done = cp.kubectl("auth", "can-i", *args, f"--as={service_account}", check=False)
    return done.stdout.strip() == "yes"


def check_admission_holds_no_rights(cp, objects, release_ns):
    """Issue 11, part 2: the admission pod mounts no token and its ServiceAccount has no rights;
    the operator's ServiceAccount has its own, and cannot read Secrets."""
    deployments = {d["metadata"]["name"]: d for d in objects if d["kind"] == "Deployment"}
    [operator_name] = [n for n in deployments if n.endswith("-operator")]
    [admission_name] = [n for n in deployments if n != operator_name]
    live = cp.kubectl_json("get", "deployment", admission_name, "-n", release_ns)["spec"]["template"]["spec"]
    assert live["automountServiceAccountToken"] is False
    admission = f"system:serviceaccount:{release_ns}:{live['serviceAccountName']}"
    operator_sa = deployments[operator_name]["spec"]["template"]["spec"]["serviceAccountName"]
    operator = f"system:serviceaccount:{release_ns}:{operator_sa}"
    assert cp.kubectl_json("get", "deployment", operator_name, "-n", release_ns)["spec"]["template"]["spec"]["containers"][0]["args"][1] == "operator"
    for verb_resource in (("patch", "deployments"), ("list", "pods"), ("create", "services"), ("create", "secrets"), ("get", "leases")):
        assert not can_i(cp, admission, *verb_resource, "-A" if verb_resource[1] != "leases" else f"-n={release_ns}"), verb_resource
    assert can_i(cp, operator, "patch", "deployments", "-n", "default")
    assert can_i(cp, operator, "create", "secrets", "-n", "default")
    for verb in ("get", "list", "watch", "update"):
        assert not can_i(cp, operator, verb, "secrets", "-n", "default"), verb
    assert not can_i(cp, operator, "list", "services", "-n", "default")
    assert not can_i(cp, operator, "get", "mutatingwebhookconfigurations")


def check_network_policy(cp, objects, namespace):
    """The policy as stored by the API server guards the named port `mcp`, and the injector never
    puts a sidecar on a port the policy leaves open (an override outside 9000-9199 is refused)."""
    [policy] = [d for d in objects if d["kind"] == "NetworkPolicy"]
    stored = cp.kubectl_json("get", "networkpolicy", policy["metadata"]["name"], "-n", namespace)["spec"]
    guarded, open_rule = stored["ingress"]
    assert guarded["ports"] == [{"port": "mcp", "protocol": "TCP"}]
    open_tcp = [(p["port"], p.get("endPort", p["port"])) for p in open_rule["ports"] if p["protocol"] == "TCP"]
    for port, injected in (("9100", True), ("9199", True), ("9300", False), ("8080", False)):
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"override-{port}", "labels": {BACKEND: "redis"}, "annotations": {"mcp-sidecar.dox/port": port}},
               "spec": {"automountServiceAccountToken": False, "containers": [{"name": "redis", "image": "redis:7"}]}}
        done = cp.kubectl("create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod))
        stored_pod = json.loads(done.stdout)
        ports = [p["containerPort"] for c in stored_pod["spec"].get("initContainers", []) + stored_pod["spec"]["containers"]
                 if c["name"] == "mcp-sidecar" for p in c.get("ports", []) if p.get("name") == "mcp"]
        if injected:
            assert ports == [int(port)], ports
            assert not [r for r in open_tcp if r[0] <= int(port) <= r[1]], (port, open_tcp)
        else:
            assert ports == [] and "9000-9199" in done.stderr, done.stderr


def run_helm_test_script(cp, helm, release, release_ns, namespace, tmp_path):
    """Apply the release's test hook objects except the Pod, then run its script as that ServiceAccount."""
    hooks = manifest_objects(helm("get", "hooks", release, "-n", release_ns).stdout)
    assert {d["kind"] for d in hooks} == {"ServiceAccount", "Role", "RoleBinding", "Pod"}
    rbac = [d for d in hooks if d["kind"] != "Pod"]
    [pod] = [d for d in hooks if d["kind"] == "Pod"]
    cp.apply(rbac)
    try:
        sa = pod["spec"]["serviceAccountName"]
        token = cp.kubectl("create", "token", sa, "-n", release_ns, "--duration=10m").stdout.strip()
        sa_dir = tmp_path / "sa"
        sa_dir.mkdir()
        (sa_dir / "token").write_text(token)
        (sa_dir / "ca.crt").write_bytes(cp.ca_pem)
        [container] = pod["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["TEST_NAMESPACE"] == namespace
        host, port = cp.server.removeprefix("https://").rsplit(":", 1)
        done = subprocess.run(
            [sys.executable, "-c", container["args"][0]], capture_output=True, text=True, timeout=120,
            env={**os.environ, **env, "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port,
                 "SA_DIR": str(sa_dir)})
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("ok: ")
        # Least privilege: the same token may not create pods anywhere else.
        denied = subprocess.run(
            [str(BIN / "kubectl"), f"--server={cp.server}", f"--certificate-authority={sa_dir / 'ca.crt'}",
             f"--token={token}", "auth", "can-i", "create", "pods", "-n", release_ns],
            capture_output=True, text=True, timeout=30)
        assert denied.stdout.strip() == "no", denied.stdout + denied.stderr
    finally:
        for d in rbac:
            resource, name, ns = ref(d)
            cp.kubectl("delete", resource, name, "-n", ns, "--ignore-not-found=true", check=False)
