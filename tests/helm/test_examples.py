"""deploy/examples: the dox-asdlc overlay (development/production values) and its four workloads.

Proves: the example manifests validate strictly against Kubernetes 1.29 and 1.37; only Redis and
Elasticsearch carry the backend label and only orchestrator (8080) and workers (8081) the
Prometheus annotations, matching their container ports; the same engine as the webhook
(`mcp-sidecar inject`) gives Redis and Elasticsearch a sidecar wired to their Secret and nothing
else; the development overlay has exactly those changes and the production overlay keeps no sidecar.
"""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from webhook.engine.config import default_config
from webhook.cli.manifests import inject_documents, load_documents

from .helpers import REPO

EXAMPLES = REPO / "deploy" / "examples"
WORKLOADS = EXAMPLES / "dox-asdlc" / "workloads.yaml"
BACKEND = "mcp-sidecar.dox/backend"
PROM = {"orchestrator": "8080", "workers": "8081"}


def workloads() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(WORKLOADS.read_text()) if d]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("StatefulSet", "Deployment")}


@pytest.mark.parametrize("path", [WORKLOADS, EXAMPLES / "redis-statefulset.yaml"], ids=lambda p: p.name)
@pytest.mark.parametrize("version", ["1.29", "1.37"])
def test_examples_validate_strictly(path, version):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            kubernetes_validate.validate(doc, version, strict=True)


def test_only_datastores_are_labelled_and_only_services_annotated():
    found = workloads()
    assert set(found) == {"redis", "elasticsearch", "orchestrator", "workers"}
    for name, doc in found.items():
        template = doc["spec"]["template"]["metadata"]
        labels, annotations = template.get("labels", {}), template.get("annotations", {})
        if name in ("redis", "elasticsearch"):
            assert labels[BACKEND] == name and not annotations
        else:
            assert BACKEND not in labels
            assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": PROM[name],
                                   "prometheus.io/path": "/metrics"}
            ports = [p["containerPort"] for c in doc["spec"]["template"]["spec"]["containers"] for p in c["ports"]]
            assert int(PROM[name]) in ports
    services = {d["metadata"]["name"]: d for d in yaml.safe_load_all(WORKLOADS.read_text()) if d and d["kind"] == "Service"}
    assert found["elasticsearch"]["spec"]["serviceName"] == "knowledge-store"
    assert services["knowledge-store"]["spec"]["selector"] == found["elasticsearch"]["spec"]["selector"]["matchLabels"]


def test_the_injector_engine_injects_exactly_the_datastores():
    output = inject_documents(load_documents(WORKLOADS.read_text()), default_config())
    by_name = {d["metadata"]["name"]: d for d in output.documents if d["kind"] in ("StatefulSet", "Deployment")}
    for name, doc in by_name.items():
        pod = doc["spec"]["template"]
        names = [c["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]]
        assert ("mcp-sidecar" in names) is (name in ("redis", "elasticsearch")), (name, names)
    warnings = [w for r in output.reports if r.result for w in r.result.warnings]
    assert not warnings
    sidecar = next(c for c in by_name["redis"]["spec"]["template"]["spec"]["containers"] if c["name"] == "mcp-sidecar")
    password = next(e for e in sidecar["env"] if e["name"] == "REDIS_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "dox-asdlc-datastores", "key": "redis-password"}
    for doc in output.documents:
        for version in ("1.29", "1.37"):
            kubernetes_validate.validate(doc, version, strict=True)


def test_overlays_change_only_labels_and_annotations():
    dev = yaml.safe_load((EXAMPLES / "dox-asdlc" / "values-development.yaml").read_text())
    prod = yaml.safe_load((EXAMPLES / "dox-asdlc" / "values-production.yaml").read_text())
    assert set(dev) == set(prod) == {"redis", "elasticsearch", "orchestrator", "workers"}
    assert dev["redis"] == {"podLabels": {BACKEND: "redis"}}
    assert dev["elasticsearch"] == {"podLabels": {BACKEND: "elasticsearch"}}
    assert prod["redis"] == prod["elasticsearch"] == {"podLabels": {}}
    found = workloads()
    for name in PROM:
        assert dev[name] == prod[name] == {"podAnnotations": found[name]["spec"]["template"]["metadata"]["annotations"]}
    assert "ui" not in dev and "ui" not in prod
