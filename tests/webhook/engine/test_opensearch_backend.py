"""The `opensearch` backend: what a pod labelled `mcp-sidecar.dox/backend: opensearch` gets (the
Elasticsearch sidecar image in its OpenSearch mode, with the OpenSearch chart's credentials)."""

from __future__ import annotations

from tests.webhook.helpers import apply, labelled_pod, validate_strict
from webhook.engine.config import parse_config
from webhook.engine.constants import SIDECAR_CONTAINER_NAME
from webhook.engine.injection import evaluate

CONFIG = parse_config(None)


def sidecar_env(pod: dict, config=CONFIG) -> tuple[dict, dict]:
    result = evaluate(pod, None, config)
    assert result.injected, result.message
    patched = apply(pod, result.patch)
    validate_strict(patched)
    [sidecar] = [c for c in (patched["spec"].get("initContainers") or []) + patched["spec"]["containers"]
                 if c["name"] == SIDECAR_CONTAINER_NAME]
    return sidecar, {e["name"]: e.get("value", e.get("valueFrom")) for e in sidecar["env"]}


def opensearch_chart_pod() -> dict:
    """The opensearch-project chart's shape: container `opensearch`, port `http`, the admin password
    in OPENSEARCH_INITIAL_ADMIN_PASSWORD from a Secret, a metrics port next to it."""
    pod = labelled_pod("opensearch")
    pod["spec"]["containers"] = [
        {"name": "fluent-bit", "image": "fluent/fluent-bit:3.1"},
        {"name": "opensearch", "image": "opensearchproject/opensearch:2.19.1",
         "ports": [{"name": "http", "containerPort": 9201}, {"name": "transport", "containerPort": 9300},
                   {"name": "metrics", "containerPort": 9600}],
         "env": [{"name": "OPENSEARCH_INITIAL_ADMIN_PASSWORD",
                  "valueFrom": {"secretKeyRef": {"name": "opensearch-admin", "key": "password"}}}]},
    ]
    return pod


def test_opensearch_pod_gets_the_opensearch_mode_and_the_admin_credentials():
    sidecar, env = sidecar_env(opensearch_chart_pod())
    assert sidecar["image"] == "mcp/elasticsearch:latest"
    assert env["ES_ENGINE"] == "opensearch"
    assert env["ES_HOST"] == "localhost" and env["ES_PORT"] == "9201"
    assert env["ES_USERNAME"] == "admin"
    assert env["ES_PASSWORD"] == {"secretKeyRef": {"name": "opensearch-admin", "key": "password"}}
    assert "ES_API_KEY" not in env


def test_bitnami_password_env_and_the_https_probe():
    pod = labelled_pod("opensearch")
    pod["spec"]["containers"] = [{
        "name": "opensearch", "image": "bitnami/opensearch:2.19.1",
        "ports": [{"name": "rest-api", "containerPort": 9200}],
        "env": [{"name": "OPENSEARCH_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": "os", "key": "opensearch-password"}}}],
        "readinessProbe": {"httpGet": {"path": "/_cluster/health", "port": "rest-api", "scheme": "HTTPS"}},
    }]
    _, env = sidecar_env(pod)
    assert env["ES_PASSWORD"] == {"secretKeyRef": {"name": "os", "key": "opensearch-password"}}
    assert env["ES_SCHEME"] == "https"


def test_global_sidecar_env_is_merged_not_replaced():
    config = parse_config("sidecar: {env: {MCP_LOG_LEVEL: debug}}")
    _, env = sidecar_env(opensearch_chart_pod(), config)
    assert env["MCP_LOG_LEVEL"] == "debug" and env["ES_ENGINE"] == "opensearch"
