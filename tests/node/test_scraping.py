"""Seed T17 on a real node: Prometheus AND vmagent scrape the real pods they discover (`up == 1`).

Both run as local processes on 127.0.0.1 with the same scrape configuration (the admin kubeconfig,
`kubernetes_sd_configs` role `pod`):

- job ``kubernetes-pods``: the usual prometheus.io/scrape|port|path|scheme annotation relabelling
  (the config style of tests/e2e/test_prometheus_discovery.py). It finds the dox-asdlc orchestrator
  (:8080) and workers (:8081) Deployments of deploy/examples/dox-asdlc/workloads.yaml, and the
  injector's own pods (the chart annotates them with prometheus.io/scheme=https on 8443; TLS is
  verified with the CA from the chart's Secret and the Service DNS name the certificate is for).
- job ``mcp-sidecars``: the injected sidecars' /metrics. The injector adds no scrape annotations
  to the pods (webhook/engine/injection.py writes only mcp-sidecar.dox/status, and the application owns its
  prometheus.io/* annotations), so the sidecar is found by what it does add: the container port
  named ``mcp`` (9000).

Asserted: every orchestrator, workers, injector and sidecar target is ``up == 1`` in Prometheus
(/api/v1/query?query=up) and ``health == "up"`` in vmagent (/api/v1/targets); the unannotated
Redis pod is not an annotation target; what was scraped is the product's own metrics
(``mcp_backend_up{backend="redis"} == 1`` from the sidecar, ``mcp_injector_injections_total`` from
the injector); vmagent delivered samples to the remote-write sink. Both are stopped at the end.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.cluster.controlplane import ControlPlaneError
from tests.e2e.test_prometheus_discovery import find_prometheus
from tests.node.kube import BACKEND_LABEL, REPO, http_json, pods, ready_count, redis_pod_spec, wait_pods_ready
from tests.support.processes import free_port, stop_group, wait_listening

pytestmark = pytest.mark.slow

WORKLOADS = REPO / "deploy" / "examples" / "dox-asdlc" / "workloads.yaml"
VMAGENT = REPO / ".cache" / "bin" / "vmagent"
ANNOTATION_JOB, SIDECAR_JOB = "kubernetes-pods", "mcp-sidecars"

REDIS_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "redis", "labels": {"app.kubernetes.io/name": "redis", BACKEND_LABEL: "redis"}},
    "spec": redis_pod_spec(password=False),
}


def scrape_config(kubeconfig: Path, namespace: str, injector_ns: str, ca_file: Path, server_name: str) -> dict:
    def sd(*namespaces: str) -> list[dict]:
        return [{"role": "pod", "kubeconfig_file": str(kubeconfig), "namespaces": {"names": list(namespaces)}}]

    where = [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
             {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}]
    return {
        "global": {"scrape_interval": "3s", "scrape_timeout": "2s"},
        "scrape_configs": [
            {
                "job_name": ANNOTATION_JOB,
                "kubernetes_sd_configs": sd(namespace, injector_ns),
                # Only https targets (prometheus.io/scheme: https) use it: the injector's serving
                # certificate is for its Service name, signed by the chart's CA.
                "tls_config": {"ca_file": str(ca_file), "server_name": server_name},
                "relabel_configs": [
                    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep", "regex": "true"},
                    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scheme"], "action": "replace",
                     "target_label": "__scheme__", "regex": "(https?)"},
                    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"], "action": "replace",
                     "target_label": "__metrics_path__", "regex": "(.+)"},
                    {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"], "action": "replace",
                     "regex": "([^:]+)(?::\\d+)?;(\\d+)", "replacement": "$1:$2", "target_label": "__address__"},
                    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
                    *where,
                ],
            },
            {
                "job_name": SIDECAR_JOB,
                "kubernetes_sd_configs": sd(namespace),
                "relabel_configs": [
                    {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "action": "keep", "regex": "mcp"},
                    {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                    *where,
                ],
            },
        ],
    }


# ---- processes ------------------------------------------------------------------------------------


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.contextmanager
def _process(argv: list[str], port: int, log: Path, what: str) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=log.parent)
    try:
        wait_listening(proc, port, what=what, log=lambda: _tail(log), timeout=60)
        yield proc
    except BaseException:
        print(f"---- {what} log\n{_tail(log)}")
        raise
    finally:
        stop_group(proc)


class _Sink(http.server.BaseHTTPRequestHandler):
    """Remote-write endpoint for vmagent: counts what arrives, answers 204."""

    received: list[int]

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append(len(body))
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802  (vmagent asks whether the VictoriaMetrics protocol is spoken: no)
        self.send_response(400)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def remote_write_sink() -> Iterator[tuple[str, list[int]]]:
    received: list[int] = []
    handler = type("Sink", (_Sink,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/write", received
    finally:
        server.shutdown()
        server.server_close()


def _pod_logs(cp, namespace: str) -> str:
    """First log lines of the namespace's pods, for failure messages (what each server says it serves)."""
    out = []
    for p in pods(cp, namespace):
        for c in p["spec"]["containers"]:
            logs = cp.kubectl("logs", "-n", namespace, p["metadata"]["name"], "-c", c["name"], "--tail=3", check=False)
            out.append(f"{p['metadata']['name']}/{c['name']}: {(logs.stdout or logs.stderr).strip()}")
    return "\n".join(out)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


# ---- the test -------------------------------------------------------------------------------------


def test_prometheus_and_vmagent_scrape_workloads_sidecar_and_injector(cp, injector, namespace, tmp_path):
    prometheus, why_not = find_prometheus()
    if prometheus is None:
        pytest.fail(f"{why_not}; run tests/cluster/build.sh prometheus")
    if not VMAGENT.is_file():
        pytest.fail(f"{VMAGENT} missing; run tests/cluster/build.sh vmagent")
    started = time.monotonic()

    # ---- the workloads: the two annotated Deployments of the example, and one labelled Redis pod
    deployments = [d for d in yaml.safe_load_all(WORKLOADS.read_text()) if d and d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"orchestrator", "workers"}
    cp.apply(deployments, "-n", namespace)
    cp.apply(REDIS_POD, "-n", namespace)
    wait_pods_ready(cp, namespace, "app.kubernetes.io/name=orchestrator", 1, timeout=180)
    wait_pods_ready(cp, namespace, "app.kubernetes.io/name=workers", 2, timeout=180)
    [redis] = wait_pods_ready(cp, namespace, "app.kubernetes.io/name=redis", 1, containers=2, timeout=180)
    sidecar = next(c for c in redis["spec"]["containers"] + redis["spec"].get("initContainers", [])
                   if c["name"] == "mcp-sidecar")
    assert {"name": "mcp", "containerPort": 9000, "protocol": "TCP"} in sidecar["ports"]
    assert not any(k.startswith("prometheus.io/") for k in redis["metadata"].get("annotations", {})), \
        "the injector is not expected to add scrape annotations"
    # mcp_backend_up is set by /health: call it once (pod IPs are reachable from the host).
    status, health = http_json(f"http://{redis['status']['podIP']}:9000/health")
    assert status == 200 and health["reachable"], health
    ready_at = time.monotonic()

    # ---- what must be scraped: (job, namespace, pod) -> instance
    expected: dict[tuple[str, str, str], str] = {}
    for p in pods(cp, namespace, "app.kubernetes.io/part-of=dox-asdlc"):
        port = p["metadata"]["annotations"]["prometheus.io/port"]
        expected[(ANNOTATION_JOB, namespace, p["metadata"]["name"])] = f"{p['status']['podIP']}:{port}"
    assert len(expected) == 3, expected
    expected[(SIDECAR_JOB, namespace, "redis")] = f"{redis['status']['podIP']}:9000"
    cp.kubectl("rollout", "status", f"deployment/{injector.deployment}", "-n", injector.namespace, "--timeout=180s")

    def injector_targets() -> dict[tuple[str, str, str], str]:
        """The release's Ready injector pods right now (other sessions' `helm upgrade` may roll them)."""
        out = {}
        for p in pods(cp, injector.namespace, f"app.kubernetes.io/instance={injector.release}"):
            if (p["metadata"]["name"].startswith(injector.deployment + "-operator-") and p["status"].get("podIP")
                    and not p["metadata"].get("deletionTimestamp") and ready_count(p) == (1, 1)):
                # the operator (its own Deployment since issue 11): plain-HTTP metrics on 9090
                annotations = p["metadata"]["annotations"]
                assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"],
                        annotations["prometheus.io/path"], annotations["prometheus.io/scheme"]) == \
                    ("true", "9090", "/metrics", "http"), annotations
                out[(ANNOTATION_JOB, injector.namespace, p["metadata"]["name"])] = f"{p['status']['podIP']}:9090"
            elif (p["metadata"]["name"].startswith(injector.deployment + "-") and p["status"].get("podIP")
                    and not p["metadata"].get("deletionTimestamp") and ready_count(p) == (1, 1)):
                annotations = p["metadata"]["annotations"]
                assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"],
                        annotations["prometheus.io/path"], annotations["prometheus.io/scheme"]) == \
                    ("true", "8443", "/metrics", "https"), annotations
                out[(ANNOTATION_JOB, injector.namespace, p["metadata"]["name"])] = f"{p['status']['podIP']}:8443"
        return out

    assert injector_targets(), "no Ready injector pod"  # 2, or 3 while another session's upgrade rolls them

    # ---- one scrape configuration for both
    secret = cp.kubectl_json("get", "secret", "-n", injector.namespace, f"{injector.deployment}-tls")
    ca_file = tmp_path / "injector-ca.crt"
    ca_file.write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
    config = tmp_path / "scrape.yml"
    config.write_text(yaml.safe_dump(scrape_config(cp.kubeconfig, namespace, injector.namespace, ca_file,
                                                   f"{injector.deployment}.{injector.namespace}.svc")))

    prom_port, vm_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_process(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            prom_port, tmp_path / "prometheus.log", "prometheus"))
        sink_url, received = stack.enter_context(remote_write_sink())
        stack.enter_context(_process(
            [str(VMAGENT), f"-promscrape.config={config}", f"-httpListenAddr=127.0.0.1:{vm_port}",
             f"-remoteWrite.url={sink_url}", f"-remoteWrite.tmpDataPath={tmp_path / 'vmagent-data'}",
             "-promscrape.kubernetesSDCheckInterval=2s", "-loggerLevel=WARN"],
            vm_port, tmp_path / "vmagent.log", "vmagent"))
        prom, vm = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{vm_port}"
        processes_at = time.monotonic()

        def key(labels: dict) -> tuple[str, str, str]:
            return labels.get("job", ""), labels.get("namespace", ""), labels.get("pod", "")

        def all_up(what: str, observe) -> tuple[dict, dict]:
            """Poll ``observe()`` ({key: (instance, healthy, detail)}) until every wanted target is healthy."""

            def check():
                want = {**expected, **injector_targets()}
                seen = observe()
                return (want, seen) if all(seen.get(k, ("", False))[:2] == (v, True) for k, v in want.items()) else None

            try:
                return cp.wait_for(check, 90, f"{what}: every expected target up", interval=1)
            except ControlPlaneError as exc:
                want, seen = {**expected, **injector_targets()}, observe()
                missing = {k: seen.get(k) for k, v in want.items() if seen.get(k, ("", False))[:2] != (v, True)}
                raise AssertionError(f"{exc}\nnot up: {missing}\n{_pod_logs(cp, namespace)}") from None

        # ---- Prometheus: up == 1 (/api/v1/query?query=up)
        def prometheus_up() -> dict:
            targets = {key(t["labels"]): t for t in _get(f"{prom}/api/v1/targets?state=active")["data"]["activeTargets"]}
            return {key(r["metric"]): (r["metric"]["instance"], r["value"][1] == "1",
                                       targets.get(key(r["metric"]), {}).get("lastError"))
                    for r in _get(f"{prom}/api/v1/query?query=up")["data"]["result"]}

        want, up = all_up("Prometheus", prometheus_up)
        prometheus_at = time.monotonic()
        # Only the annotated pods are annotation targets in our namespace (not the Redis pod).
        ours = {k for k in up if k[0] == ANNOTATION_JOB and k[1] == namespace}
        assert ours == {k for k in expected if k[0] == ANNOTATION_JOB}, ours
        assert {k for k in up if k[0] == SIDECAR_JOB} == {(SIDECAR_JOB, namespace, "redis")}
        # What was scraped is the product's own metrics: the sidecar's backend gauge, the injector's counter.
        [backend_up] = _get(f"{prom}/api/v1/query?" + urllib.parse.urlencode(
            {"query": f'mcp_backend_up{{job="{SIDECAR_JOB}",namespace="{namespace}"}}'}))["data"]["result"]
        assert backend_up["metric"]["backend"] == "redis" and backend_up["value"][1] == "1", backend_up
        injections = _get(f"{prom}/api/v1/query?" + urllib.parse.urlencode(
            {"query": f'sum(mcp_injector_injections_total{{namespace="{injector.namespace}",backend="redis"}})'}))
        assert float(injections["data"]["result"][0]["value"][1]) >= 1, injections
        asdlc = _get(f"{prom}/api/v1/query?" + urllib.parse.urlencode(
            {"query": f'count by (service) (asdlc_up{{namespace="{namespace}"}} == 1)'}))["data"]["result"]
        assert {r["metric"]["service"]: r["value"][1] for r in asdlc} == {"orchestrator": "1", "workers": "2"}, asdlc

        # ---- vmagent: health "up" (/api/v1/targets)
        def vmagent_up() -> dict:
            return {key(t["labels"]): (t["labels"].get("instance"), t["health"] == "up", (t["scrapeUrl"], t["lastError"]))
                    for t in _get(f"{vm}/api/v1/targets")["data"]["activeTargets"]}

        want, health = all_up("vmagent", vmagent_up)
        vmagent_at = time.monotonic()
        for k, instance in want.items():
            # In the injector's namespace only the admission pods (8443) speak TLS; the operator's
            # metrics (9090) are plain HTTP.
            scheme = "https" if k[1] == injector.namespace and instance.endswith(":8443") else "http"
            assert health[k][2][0] == f"{scheme}://{instance}/metrics", health[k]
        ours = {k for k in health if k[0] == ANNOTATION_JOB and k[1] == namespace}
        assert ours == {k for k in expected if k[0] == ANNOTATION_JOB}, ours
        cp.wait_for(lambda: sum(received) > 0, 30, "vmagent to remote-write samples to the sink")

    print(f"\n[timing] pods ready {ready_at - started:.1f}s; Prometheus all up {prometheus_at - processes_at:.1f}s "
          f"after start; vmagent all up {vmagent_at - processes_at:.1f}s after start; "
          f"{len(received)} remote-write requests, {sum(received)} bytes")
