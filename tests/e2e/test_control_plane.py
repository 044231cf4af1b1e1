"""The local control plane is a real Kubernetes API: version, controllers, PodSecurity, webhooks, teardown."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from tests.cluster.controlplane import ControlPlane, pid_alive, pinned_kubernetes_version, port_open

pytestmark = pytest.mark.slow

PAUSE = "registry.k8s.io/pause:3.10"


def pod(name: str, labels: dict[str, str] | None = None, **spec: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": PAUSE}], **spec},
    }


def test_version_is_the_pinned_release(control_plane: ControlPlane) -> None:
    status, version = control_plane.request("GET", "/version")
    assert status == 200
    pinned = pinned_kubernetes_version()
    assert version["gitVersion"] == pinned
    assert (version["major"], version["minor"]) == tuple(pinned.lstrip("v").split(".")[:2])
    client = control_plane.kubectl("version", "-o", "json").stdout
    assert json.loads(client)["serverVersion"]["gitVersion"] == pinned


def test_new_namespace_gets_default_service_account(control_plane: ControlPlane) -> None:
    control_plane.kubectl("create", "namespace", "sa-check")
    try:
        sa = control_plane.wait_for(
            lambda: control_plane.kubectl_json("get", "serviceaccount", "default", "-n", "sa-check"),
            30, "default ServiceAccount")
        assert sa["metadata"]["name"] == "default"
        # root-ca-cert-publisher runs too: pods can mount the cluster CA.
        control_plane.wait_for(
            lambda: control_plane.kubectl("get", "configmap", "kube-root-ca.crt", "-n", "sa-check"),
            30, "kube-root-ca.crt")
    finally:
        control_plane.kubectl("delete", "namespace", "sa-check", "--wait=false")


def test_statefulset_controller_creates_pods(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.apply({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "serviceName": "web",
            "replicas": 2,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "main", "image": PAUSE}]}},
        },
    })

    def pods() -> list[dict] | None:
        items = control_plane.kubectl_json("get", "pods", "-n", namespace, "-l", "app=web")["items"]
        return items if len(items) == 2 else None

    items = control_plane.wait_for(pods, 60, "StatefulSet pods")
    assert sorted(p["metadata"]["name"] for p in items) == ["web-0", "web-1"]
    for p in items:
        assert p["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
        assert p["status"]["phase"] == "Pending"  # no scheduler, no kubelet
        assert p["spec"]["serviceAccountName"] == "default"


def test_pod_security_restricted_is_enforced(control_plane: ControlPlane) -> None:
    ns = "psa-restricted"
    control_plane.create_namespace(ns, {"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        bad = control_plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod("bad")), check=False)
        assert bad.returncode != 0
        assert "violates PodSecurity" in bad.stderr and "restricted" in bad.stderr

        good = pod("good", securityContext={"runAsNonRoot": True, "runAsUser": 1000,
                                            "seccompProfile": {"type": "RuntimeDefault"}})
        good["spec"]["containers"][0]["securityContext"] = {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        control_plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(good))
    finally:
        control_plane.kubectl("delete", "namespace", ns, "--wait=false")


class _AnnotatingWebhook(BaseHTTPRequestHandler):
    """A minimal mutating admission webhook: adds the annotation ``e2e/mutated: "true"``."""

    calls: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        type(self).calls.append(request)
        obj = request["object"]
        if obj["metadata"].get("annotations"):
            patch = [{"op": "add", "path": "/metadata/annotations/e2e~1mutated", "value": "true"}]
        else:
            patch = [{"op": "add", "path": "/metadata/annotations", "value": {"e2e/mutated": "true"}}]
        body = json.dumps({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": request["uid"],
                "allowed": True,
                "patchType": "JSONPatch",
                "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
            },
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def annotating_webhook(webhook_tls) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AnnotatingWebhook)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(webhook_tls.cert_file), str(webhook_tls.key_file))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _AnnotatingWebhook.calls = []
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/mutate"
    finally:
        server.shutdown()
        server.server_close()


def test_mutating_webhook_over_tls_mutates_pods(
    control_plane: ControlPlane, namespace: str, annotating_webhook: str, webhook_tls
) -> None:
    control_plane.register_mutating_webhook(annotating_webhook, webhook_tls.ca_pem, name="e2e-annotator",
                                            webhook_name="annotate.e2e.test")
    try:
        control_plane.apply(pod("labelled", {"mcp-sidecar.dox/backend": "redis"}), "-n", namespace)
        control_plane.apply(pod("unlabelled"), "-n", namespace)
        labelled = control_plane.kubectl_json("get", "pod", "labelled", "-n", namespace)
        unlabelled = control_plane.kubectl_json("get", "pod", "unlabelled", "-n", namespace)
        assert labelled["metadata"]["annotations"]["e2e/mutated"] == "true"
        assert "e2e/mutated" not in (unlabelled["metadata"].get("annotations") or {})
        real = [c for c in _AnnotatingWebhook.calls if not c.get("dryRun")]
        assert [c["name"] for c in real] == ["labelled"]
        assert real[0]["operation"] == "CREATE" and real[0]["namespace"] == namespace

        # Namespaces labelled mcp-sidecar.dox/injection=disabled are skipped by the namespaceSelector.
        control_plane.create_namespace(f"{namespace}-off", {"mcp-sidecar.dox/injection": "disabled"})
        control_plane.apply(pod("opted-out", {"mcp-sidecar.dox/backend": "redis"}), "-n", f"{namespace}-off")
        off = control_plane.kubectl_json("get", "pod", "opted-out", "-n", f"{namespace}-off")
        assert "e2e/mutated" not in (off["metadata"].get("annotations") or {})
    finally:
        control_plane.unregister_mutating_webhook("e2e-annotator")
        control_plane.kubectl("delete", "namespace", f"{namespace}-off", "--wait=false",
                              "--ignore-not-found=true", check=False)


def test_teardown_leaves_no_processes_or_ports_even_on_error(control_plane: ControlPlane) -> None:
    # (control_plane only guarantees the binaries are built; a second, independent cluster is started.)
    with pytest.raises(RuntimeError, match="boom"):
        with ControlPlane(build=False) as cp:
            pids, ports, workdir = cp.pids, cp.ports, cp.workdir
            assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
            assert all(pid_alive(p) for p in pids.values())
            raise RuntimeError("boom")
    assert not [name for name, p in pids.items() if pid_alive(p)]
    assert not [p for p in ports if port_open(p)]
    assert not workdir.exists()


_HOLDER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from tests.cluster.controlplane import ControlPlane
cp = ControlPlane(build=False, log=lambda m: None).start()
print(json.dumps({"pids": cp.pids, "ports": cp.ports, "workdir": str(cp.workdir)}), flush=True)
time.sleep(600)
"""


def test_components_die_when_the_python_process_is_killed(control_plane: ControlPlane) -> None:
    """SIGKILL skips atexit and finally blocks; PR_SET_PDEATHSIG still takes the components down."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, root], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(holder.stdout.readline())
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    try:
        ControlPlane.wait_for(lambda: not any(pid_alive(p) for p in info["pids"].values()), 15,
                              "components to exit")
        deadline = time.monotonic() + 10
        while [p for p in info["ports"] if port_open(p)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in info["ports"] if port_open(p)]
    finally:
        for pid in info["pids"].values():  # never leave anything behind, even if the test failed
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(info["workdir"], ignore_errors=True)
