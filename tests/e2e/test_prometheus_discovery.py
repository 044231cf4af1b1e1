"""End-to-end: a real Prometheus discovers the dox-asdlc pods through their annotations (issue 6,
seed step "verify Prometheus scraping").

Prometheus (Debian package `prometheus`) runs on loopback with `kubernetes_sd_configs` role `pod`
against the local API server (admin client certificate) and the usual prometheus.io relabelling.
The example workloads (deploy/examples/dox-asdlc/workloads.yaml) plus an unannotated UI are applied;
the controller manager creates their pods. Pods stay Pending without a kubelet, and Prometheus
ignores pods without an IP, so the test writes a loopback pod IP into each pod's status (what a
kubelet would do). Asserted through /api/v1/targets: orchestrator and workers pods are active
targets on :8080 / :8081 with the annotated path; UI, Redis and Elasticsearch pods are dropped.
The scrapes themselves fail (nothing listens), which is fine.

Debian's `prometheus` package (2.42) is built WITHOUT Kubernetes service discovery, so the test needs
an upstream build: tests/cluster/build.sh builds one from the Go module proxy into .cache/bin
(the control_plane fixture runs it; ~9 min cold on 2 cores, seconds when cached); $MCP_PROMETHEUS
overrides it.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.cluster.controlplane import Component, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "deploy" / "examples" / "dox-asdlc" / "workloads.yaml"


def _has_kubernetes_sd(path: Path) -> bool:
    """Debian's `prometheus` (2.42) is built without Kubernetes service discovery; look for its package."""
    needle = b"prometheus/prometheus/discovery/kubernetes"
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(1 << 20):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle):]
    return False


def find_prometheus() -> tuple[str | None, str]:
    """(binary, why not): $MCP_PROMETHEUS, .cache/bin/prometheus, .cache/prometheus-build/prometheus, PATH."""
    candidates = [os.environ.get("MCP_PROMETHEUS"), REPO / ".cache" / "bin" / "prometheus",
                  REPO / ".cache" / "prometheus-build" / "prometheus", shutil.which("prometheus")]
    seen = []
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            if _has_kubernetes_sd(Path(candidate)):
                return str(candidate), ""
            seen.append(str(candidate))
    if seen:
        return None, (f"Prometheus at {', '.join(seen)} has no kubernetes_sd_configs (Debian's package is built "
                      "without Kubernetes discovery); set MCP_PROMETHEUS to an upstream build")
    return None, "no prometheus binary (Debian package `prometheus`, or MCP_PROMETHEUS=/path/to/upstream/prometheus)"

# Pod IPs written into the pods' status: loopback, unlikely to have anything on 8080/8081.
POD_IP_PREFIX = "127.0.0."
POD_IP_FIRST = 101

UI = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "ui", "labels": {"app.kubernetes.io/name": "ui", "app.kubernetes.io/part-of": "dox-asdlc"}},
    "spec": {"replicas": 1,
             "selector": {"matchLabels": {"app.kubernetes.io/name": "ui"}},
             "template": {"metadata": {"labels": {"app.kubernetes.io/name": "ui"}},
                          "spec": {"automountServiceAccountToken": False,
                                   "containers": [{"name": "ui", "image": "dox/asdlc-ui:latest",
                                                   "ports": [{"name": "http", "containerPort": 3000}]}]}}},
}


def prometheus_config(cp, namespace: str) -> dict:
    sd = {
        "role": "pod",
        "api_server": cp.server,
        "tls_config": {"ca_file": str(cp.ca_file), "cert_file": str(cp.admin_cert), "key_file": str(cp.admin_key)},
        "namespaces": {"names": [namespace]},
    }
    return {
        "global": {"scrape_interval": "5s", "scrape_timeout": "2s"},
        "scrape_configs": [{
            "job_name": "kubernetes-pods",
            "kubernetes_sd_configs": [sd],
            # The conventional prometheus.io/* pod annotation relabelling.
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep", "regex": "true"},
                {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"], "action": "replace",
                 "target_label": "__metrics_path__", "regex": "(.+)"},
                {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"], "action": "replace",
                 "regex": "([^:]+)(?::\\d+)?;(\\d+)", "replacement": "$1:$2", "target_label": "__address__"},
                {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            ],
        }],
    }


@pytest.fixture
def prometheus(control_plane, namespace, tmp_path):
    binary, why_not = find_prometheus()
    if binary is None:  # tests/cluster/build.sh (run by the control_plane fixture) builds one
        pytest.fail(f"{why_not}; run tests/cluster/build.sh prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(control_plane, namespace)))
    port = free_port()
    component = Component("prometheus", [
        binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ], tmp_path / "prometheus.log", ports=[port])
    component.start()
    try:
        url = f"http://127.0.0.1:{port}"
        control_plane.wait_for(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200,
                               60, "prometheus /-/ready")
        yield url
    except BaseException:
        print(component.tail())
        raise
    finally:
        component.stop()


def test_prometheus_finds_orchestrator_and_workers_by_annotation(control_plane, namespace, prometheus):
    cp = control_plane
    cp.kubectl("apply", "-n", namespace, "-f", str(WORKLOADS))
    cp.apply({**UI, "metadata": {**UI["metadata"], "namespace": namespace}})

    # redis-0, elasticsearch-0, 1 orchestrator, 2 workers, 1 ui.
    def pods():
        items = cp.kubectl_json("get", "pods", "-n", namespace)["items"]
        return items if len(items) == 6 else None

    items = cp.wait_for(pods, 60, "the controllers to create the 6 pods")
    expected: dict[str, tuple[str, str]] = {}  # pod name -> (address, app)
    for i, pod in enumerate(items):
        ip = f"{POD_IP_PREFIX}{POD_IP_FIRST + i}"
        cp.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status", "--type=merge",
                   "-p", json.dumps({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}}))
        app = pod["metadata"]["labels"]["app.kubernetes.io/name"]
        expected[pod["metadata"]["name"]] = (ip, app)

    def targets():
        with urllib.request.urlopen(f"{prometheus}/api/v1/targets?state=any", timeout=5) as r:
            data = json.load(r)["data"]
        active = [t for t in data["activeTargets"] if t["labels"].get("namespace") == namespace]
        return data if len(active) == 3 else None

    data = cp.wait_for(targets, 90, "prometheus to discover 3 annotated pods", interval=1)
    active = {t["labels"]["pod"]: t for t in data["activeTargets"] if t["labels"].get("namespace") == namespace}
    want = {name: v for name, v in expected.items() if v[1] in ("orchestrator", "workers")}
    assert set(active) == set(want)
    for name, (ip, app) in want.items():
        target = active[name]
        port = {"orchestrator": "8080", "workers": "8081"}[app]
        assert target["labels"]["instance"] == f"{ip}:{port}"
        assert target["scrapeUrl"] == f"http://{ip}:{port}/metrics"
        assert target["discoveredLabels"]["__meta_kubernetes_pod_annotation_prometheus_io_path"] == "/metrics"
        assert target["labels"]["app_kubernetes_io_name"] == app

    dropped = {t["discoveredLabels"].get("__meta_kubernetes_pod_name"): t for t in data["droppedTargets"]
               if t["discoveredLabels"].get("__meta_kubernetes_namespace") == namespace}
    not_scraped = {name for name, (_, app) in expected.items() if app in ("ui", "redis", "elasticsearch")}
    assert not_scraped <= set(dropped), (not_scraped, set(dropped))
    ui = next(t for name, t in dropped.items() if expected[name][1] == "ui")
    assert "__meta_kubernetes_pod_annotation_prometheus_io_scrape" not in ui["discoveredLabels"]
