"""End-to-end: the real admission server called by a real kube-apiserver over TLS (issue 4 scenarios).

The API server applies our JSON Patch and stores the pod; the controller manager creates pods for
StatefulSets and Deployments. Pods stay Pending (no scheduler/kubelet), which is all we need.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
import yaml

from tests.support.webhook_process import WebhookProcess, free_port

pytestmark = pytest.mark.slow

BACKEND = "mcp-sidecar.dox/backend"
RESTRICTED_CONTAINER_SC = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(scope="module")
def injector(control_plane, tmp_path_factory):
    """Our webhook, registered the way the chart registers it (URL + caBundle)."""
    process = WebhookProcess(tmp_path_factory.mktemp("injector")).start()
    control_plane.register_mutating_webhook(process.url + "/mutate", process.ca_pem)
    yield process
    control_plane.unregister_mutating_webhook()
    process.stop()


def pod_manifest(name, *, backend="redis", annotations=None, containers=None, restricted=False, **spec):
    container = {"name": "redis", "image": "redis:7", "ports": [{"name": "redis", "containerPort": 6379}]}
    if restricted:
        container["securityContext"] = {**RESTRICTED_CONTAINER_SC, "runAsUser": 999}
    metadata = {"name": name, "labels": {BACKEND: backend} if backend else {}}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"automountServiceAccountToken": False, "containers": containers or [container], **spec},
    }


def create(cp, namespace, obj, *extra):
    """kubectl create; returns (stored object or dry-run output, kubectl stderr with API warnings)."""
    proc = cp.kubectl("create", "-n", namespace, "-f", "-", "-o", "json", *extra, input=json.dumps(obj))
    return json.loads(proc.stdout), proc.stderr


def get_pod(cp, namespace, name):
    return cp.kubectl_json("get", "pod", "-n", namespace, name)


def sidecars(pod):
    spec = pod["spec"]
    return [c for c in (spec.get("initContainers") or []) + spec["containers"] if c["name"] == "mcp-sidecar"]


def test_labelled_pod_is_stored_injected_and_passes_restricted(control_plane, injector):
    ns = "e2e-restricted"
    control_plane.create_namespace(ns, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        _, stderr = create(control_plane, ns, pod_manifest("redis-0", restricted=True))
        pod = get_pod(control_plane, ns, "redis-0")
        [sidecar] = sidecars(pod)
        assert sidecar["image"] == "mcp/redis:latest"
        assert sidecar["ports"][0] == {"name": "mcp", "containerPort": 9000, "protocol": "TCP"}
        assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):  # stored as the API server accepted it
            assert sidecar[probe]["httpGet"]["path"] == "/livez" and sidecar[probe]["httpGet"]["port"] == "mcp"
        assert sidecar["securityContext"]["runAsGroup"] == 1000
        assert {"name": "mcp-sidecar-tmp", "mountPath": "/tmp"} in sidecar["volumeMounts"]
        assert any(v["name"] == "mcp-sidecar-tmp" for v in pod["spec"]["volumes"])
        status = json.loads(pod["metadata"]["annotations"]["mcp-sidecar.dox/status"])
        assert status["backend"] == "redis"
        assert "Warning" not in stderr
    finally:
        control_plane.kubectl("delete", "namespace", ns, "--wait=false")


def wait_for_pods(cp, namespace, selector, count):
    def ready():
        items = cp.kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]
        return items if len(items) >= count else None
    return cp.wait_for(ready, timeout=60, what=f"{count} pods {selector}")


def test_statefulset_and_deployment_pods_are_all_injected(control_plane, injector, namespace):
    template = {"metadata": {"labels": {"app": "kv", BACKEND: "redis"}}, "spec": pod_manifest("x")["spec"]}
    control_plane.apply(
        [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "kv", "namespace": namespace},
             "spec": {"replicas": 2, "serviceName": "kv", "podManagementPolicy": "Parallel",
                      "selector": {"matchLabels": {"app": "kv"}}, "template": template}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cache", "namespace": namespace},
             "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "cache"}},
                      "template": {**template, "metadata": {"labels": {"app": "cache", BACKEND: "redis"}}}}},
        ]
    )
    for selector in ("app=kv", "app=cache"):
        pods = wait_for_pods(control_plane, namespace, selector, 2)
        assert all(len(sidecars(p)) == 1 for p in pods), [p["metadata"]["name"] for p in pods]


def test_opt_out_and_disabled_namespace_are_respected(control_plane, injector, namespace):
    create(control_plane, namespace, pod_manifest("opted-out", annotations={"mcp-sidecar.dox/inject": "false"}))
    assert sidecars(get_pod(control_plane, namespace, "opted-out")) == []
    ns = "e2e-disabled"
    control_plane.create_namespace(ns, labels={"mcp-sidecar.dox/injection": "disabled"})
    try:
        before = control_plane.webhook_calls("inject.mcp-sidecar.dox")
        create(control_plane, ns, pod_manifest("redis-0"))
        assert sidecars(get_pod(control_plane, ns, "redis-0")) == []
        assert control_plane.webhook_calls("inject.mcp-sidecar.dox") == before  # filtered by namespaceSelector
    finally:
        control_plane.kubectl("delete", "namespace", ns, "--wait=false")


def test_unknown_backend_and_invalid_override_warn_the_kubectl_user(control_plane, injector, namespace):
    _, stderr = create(control_plane, namespace, pod_manifest("mongo", backend="mongodb"))
    assert "Warning: mcp-sidecar not injected: unknown backend 'mongodb'" in stderr
    assert sidecars(get_pod(control_plane, namespace, "mongo")) == []

    original = pod_manifest("bad", annotations={"mcp-sidecar.dox/port": "ninety"})
    _, stderr = create(control_plane, namespace, original)
    assert "mcp-sidecar.dox/port" in stderr and "port number 1-65535" in stderr
    stored = get_pod(control_plane, namespace, "bad")
    assert [c["name"] for c in stored["spec"]["containers"]] == ["redis"]
    assert "mcp-sidecar.dox/status" not in stored["metadata"]["annotations"]


def test_native_sidecar_mode_stores_the_first_init_container(control_plane, injector, namespace):
    manifest = pod_manifest(
        "native",
        annotations={"mcp-sidecar.dox/native": "true"},
        initContainers=[{"name": "setup", "image": "busybox:1.36", "command": ["true"]}],
    )
    create(control_plane, namespace, manifest)
    pod = get_pod(control_plane, namespace, "native")
    first = pod["spec"]["initContainers"][0]
    assert first["name"] == "mcp-sidecar" and first["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["redis"]


def test_server_side_dry_run_shows_injection_and_stores_nothing(control_plane, injector, namespace):
    proc = control_plane.kubectl("create", "-n", namespace, "--dry-run=server", "-o", "yaml", "-f", "-",
                                 input=json.dumps(pod_manifest("dry")))
    shown = yaml.safe_load(proc.stdout)
    assert len(sidecars(shown)) == 1
    missing = control_plane.kubectl("get", "pod", "-n", namespace, "dry", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_redis_password_secret_is_referenced_not_copied(control_plane, injector, namespace):
    control_plane.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis", "namespace": namespace},
                         "stringData": {"redis-password": "s3cret-value"}})
    container = {
        "name": "redis", "image": "bitnami/redis:7.4",
        "env": [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "redis-password"}}}],
        "ports": [{"name": "redis", "containerPort": 6379}],
    }
    create(control_plane, namespace, pod_manifest("secure", containers=[container]))
    pod = get_pod(control_plane, namespace, "secure")
    [sidecar] = sidecars(pod)
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "redis", "key": "redis-password"}}
    assert "s3cret-value" not in json.dumps(pod)


class _AddContainerWebhook(BaseHTTPRequestHandler):
    """A second mutating webhook that adds a container, to force our reinvocation."""

    def do_POST(self):  # noqa: N802 (http.server API)
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        names = [c["name"] for c in request["object"]["spec"]["containers"]]
        patch = [] if "log-shipper" in names else [
            {"op": "add", "path": "/spec/containers/-", "value": {"name": "log-shipper", "image": "fluent/fluent-bit:3"}}]
        response = {"uid": request["uid"], "allowed": True}
        if patch:
            response.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(patch).encode()).decode())
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_reinvocation_with_another_mutating_webhook_injects_exactly_once(control_plane, injector, namespace, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _AddContainerWebhook)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # "a-" sorts before our webhook configuration, so it runs first... and "z-" after: try both orders.
        for config_name in ("a-log-shipper", "z-log-shipper"):
            control_plane.register_mutating_webhook(
                f"https://127.0.0.1:{server.server_address[1]}/", ca.cert_pem.bytes(),
                name=config_name, webhook_name=f"{config_name}.test.dox")
            try:
                name = f"reinvoked-{config_name[0]}"
                create(control_plane, namespace, pod_manifest(name))
                pod = get_pod(control_plane, namespace, name)
                names = [c["name"] for c in pod["spec"]["containers"]]
                assert names.count("mcp-sidecar") == 1 and names.count("log-shipper") == 1, names
            finally:
                control_plane.unregister_mutating_webhook(config_name)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("failure", ["refused", "hangs"])
def test_webhook_down_with_failure_policy_ignore_never_blocks(control_plane, injector, namespace, failure):
    """Last on purpose: swaps our registration for a dead endpoint, then restores it.

    ``refused``: nothing listens. ``hangs``: a socket that accepts TCP but never answers TLS, so the
    API server waits for the 2 s timeoutSeconds and then admits the pod uninjected.
    """
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    if failure == "hangs":
        silent.listen(64)
    port = silent.getsockname()[1]
    if failure == "refused":
        silent.close()
    control_plane.register_mutating_webhook(
        f"https://127.0.0.1:{port}/mutate", injector.ca_pem, timeout_seconds=2, wait=False)
    try:
        time.sleep(2)  # let the API server's informer see the new configuration
        started = time.monotonic()
        _, stderr = create(control_plane, namespace, pod_manifest(f"while-{failure}"))
        elapsed = time.monotonic() - started
        pod = get_pod(control_plane, namespace, f"while-{failure}")
        assert sidecars(pod) == [], stderr
        assert elapsed < 5, f"pod creation took {elapsed:.1f}s with a {failure} webhook"
    finally:
        silent.close()
        control_plane.register_mutating_webhook(injector.url + "/mutate", injector.ca_pem)


def test_auth_token_volume_is_stored_and_the_opt_out_warns_the_kubectl_user(control_plane, injector, namespace):
    """Auth on by default (issue 11): the API server stores the Secret volume (restricted allows it);
    `mcp-sidecar.dox/auth: none` is admitted with a warning kubectl shows, every time."""
    _, stderr = create(control_plane, namespace, pod_manifest("with-token"))
    pod = get_pod(control_plane, namespace, "with-token")
    [sidecar] = sidecars(pod)
    assert {"name": "MCP_AUTH_TOKEN_FILE", "value": "/var/run/secrets/mcp-sidecar/token"} in sidecar["env"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "mcp-sidecar-auth")
    assert volume["secret"]["secretName"] == "mcp-sidecar-token" and volume["secret"]["optional"] is True
    assert all(m["name"] != "mcp-sidecar-auth" for c in pod["spec"]["containers"] if c["name"] != "mcp-sidecar"
               for m in c.get("volumeMounts") or [])
    assert "Warning" not in stderr

    for name in ("open-1", "open-2"):
        _, stderr = create(control_plane, namespace, pod_manifest(name, annotations={"mcp-sidecar.dox/auth": "none"}))
        assert "Warning: mcp-sidecar: authentication is off" in stderr and "without a credential" in stderr
        [sidecar] = sidecars(get_pod(control_plane, namespace, name))
        assert {"name": "MCP_AUTH", "value": "none"} in sidecar["env"]

    _, stderr = create(control_plane, namespace, pod_manifest("typo", annotations={"mcp-sidecar.dox/auth": "off"}))
    assert "mcp-sidecar.dox/auth" in stderr and sidecars(get_pod(control_plane, namespace, "typo")) == []
