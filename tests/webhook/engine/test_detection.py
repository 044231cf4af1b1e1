"""Detection over manifests shaped like the charts people install (tests/golden/inputs/chart-*.yaml):
the port, TLS, the CA mount and the password source the sidecar gets, and the warnings when
something cannot be mapped. Each row is what a user of that chart needs for the sidecar to connect.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.admission.review import MAX_WARNING_CHARS
from webhook.engine.config import default_config
from webhook.engine.injection import evaluate
from webhook.cli.manifests import POD_TEMPLATE_PATHS

INPUTS = Path(__file__).resolve().parents[2] / "golden" / "inputs"
TLS_DIR = "/var/run/secrets/mcp-sidecar-tls"


def _template(name: str) -> dict[str, Any]:
    document = yaml.safe_load((INPUTS / name).read_text())
    node = document
    for token in POD_TEMPLATE_PATHS.get(document["kind"], ()):
        node = node[token]
    return node


def _inject(template: dict[str, Any]):
    result = evaluate(copy.deepcopy(template), None, default_config())
    assert result.injected, result.message
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in result.rendered.container["env"]}
    tls_volume = next((v for v in result.rendered.volumes if v["name"] == "mcp-sidecar-tls"), None)
    sources = {s["secret"]["name"]: {i["key"]: i["path"] for i in s["secret"]["items"]}
               for s in (tls_volume or {}).get("projected", {}).get("sources", [])}
    return result, env, sources


def _ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


CASES = [
    # file, port env, expected env subset, expected TLS Secret sources, warning fragment (None: no warning)
    ("chart-bitnami-redis-tls.yaml", {
        "REDIS_PORT": "6379", "REDIS_TLS": "true", "REDIS_TLS_CA_FILE": f"{TLS_DIR}/ca.crt",
        "REDIS_TLS_CERT_FILE": f"{TLS_DIR}/tls.crt", "REDIS_TLS_KEY_FILE": f"{TLS_DIR}/tls.key",
        "REDIS_PASSWORD": _ref("cache-redis", "redis-password")},
     {"cache-redis-crt": {"ca.crt": "ca.crt", "tls.crt": "tls.crt", "tls.key": "tls.key"}}, None),
    ("chart-bitnami-redis-cluster-tls.yaml", {
        "REDIS_PORT": "6380", "REDIS_TLS": "true", "REDIS_TLS_CA_FILE": f"{TLS_DIR}/ca.crt", "REDIS_TLS_CERT_FILE": None,
        "REDIS_PASSWORD": _ref("shards-redis-cluster", "redis-password")},
     {"shards-redis-cluster-crt": {"ca.crt": "ca.crt"}}, None),
    ("chart-redis-ha-tls.yaml", {
        "REDIS_PORT": "6385", "REDIS_TLS": "true", "REDIS_TLS_CA_FILE": f"{TLS_DIR}/ca.crt",
        "REDIS_PASSWORD": _ref("sessions-redis-ha", "auth")},
     {"redis-ha-tls": {"ca.crt": "ca.crt", "redis.crt": "tls.crt", "redis.key": "tls.key"}}, None),
    ("chart-redis-args-tls.yaml", {
        "REDIS_PORT": "6380", "REDIS_TLS": "true", "REDIS_TLS_CA_FILE": f"{TLS_DIR}/ca.crt",
        "REDIS_TLS_SERVER_NAME": "queue.jobs.svc.cluster.local",
        "REDIS_PASSWORD": _ref("queue-auth", "secret")},
     {"queue-tls": {"ca.crt": "ca.crt"}}, None),
    ("chart-elastic-es8.yaml", {
        "ES_PORT": "9200", "ES_SCHEME": "https", "ES_CA_CERT": f"{TLS_DIR}/ca.crt", "ES_USERNAME": "elastic",
        "ES_PASSWORD": _ref("elasticsearch-master-credentials", "password")},
     {"elasticsearch-master-certs": {"ca.crt": "ca.crt"}}, None),
    ("chart-bitnami-elasticsearch-security.yaml", {
        "ES_PORT": "9200", "ES_SCHEME": "https", "ES_CA_CERT": f"{TLS_DIR}/ca.crt",
        "ES_PASSWORD": _ref("search-elasticsearch", "elasticsearch-password")},
     {"search-elasticsearch-master-crt": {"ca.crt": "ca.crt"}}, None),
    ("chart-redis-envfrom.yaml", {"REDIS_PORT": "6379"}, {},
     "envFrom Secret redis-env"),
    ("elasticsearch-statefulset.yaml", {"ES_SCHEME": "https", "ES_PASSWORD": _ref("knowledge-store-es", "elastic-password")},
     {}, "set mcp-sidecar.dox/tls-secret: NAME"),
]


@pytest.mark.parametrize("name,expected_env,expected_sources,warning", CASES, ids=[c[0] for c in CASES])
def test_chart_shapes_give_the_sidecar_what_it_needs(name, expected_env, expected_sources, warning) -> None:
    result, env, sources = _inject(_template(name))
    assert {k: env.get(k) for k in expected_env} == expected_env
    assert sources == expected_sources
    if warning is None:
        assert result.warnings == []
    else:
        assert any(warning in w for w in result.warnings), result.warnings
        # The admission response clips warnings at 256 characters: the fix must survive it.
        assert any(warning in w[: MAX_WARNING_CHARS - 3] for w in result.warnings), result.warnings
    if sources:
        mount = next(m for m in result.rendered.container["volumeMounts"] if m["name"] == "mcp-sidecar-tls")
        assert mount == {"name": "mcp-sidecar-tls", "mountPath": TLS_DIR, "readOnly": True}
        # The datastore's own containers never see the sidecar's volume.
        template = _template(name)
        assert all(m.get("name") != "mcp-sidecar-tls" for c in template["spec"]["containers"] for m in c.get("volumeMounts") or [])


def test_password_warning_names_secrets_and_annotation() -> None:
    result, env, _ = _inject(_template("chart-redis-envfrom.yaml"))
    assert "REDIS_PASSWORD" not in env
    assert result.warnings == [
        "mcp-sidecar: the sidecar has no REDIS_PASSWORD: container redis reads Secrets not mappable to its password; "
        "set mcp-sidecar.dox/password-secret: NAME:KEY if it needs one (env LICENSE_KEY from Secret vendor-license "
        "key key; envFrom Secret redis-env)"]
    # Clipped at 256 characters by the admission response, the fix is still whole.
    assert "password-secret: NAME:KEY" in result.warnings[0][: MAX_WARNING_CHARS - 3]

def _redis_pod(**container: Any) -> dict[str, Any]:
    base = {"name": "redis", "image": "redis:7.2", "ports": [{"name": "redis", "containerPort": 6379}]}
    return {"metadata": {"labels": {"mcp-sidecar.dox/backend": "redis"}, "annotations": {}},
            "spec": {"containers": [{**base, **container}], "volumes": []}}


def test_tls_port_without_port_zero_keeps_the_plain_port() -> None:
    """--tls-port alone leaves the plain listener on: the sidecar keeps it (no certificates needed)."""
    _, env, sources = _inject(_redis_pod(args=["--tls-port", "6380", "--tls-ca-cert-file", "/c/ca.crt"]))
    assert env["REDIS_PORT"] == "6379" and "REDIS_TLS" not in env and sources == {}


def test_tls_without_ca_warns_and_keeps_verification() -> None:
    result, env, sources = _inject(_redis_pod(args=["--port", "0", "--tls-port", "6380"]))
    assert env["REDIS_TLS"] == "true" and env["REDIS_PORT"] == "6380"
    assert "REDIS_TLS_VERIFY" not in env and "REDIS_TLS_CA_FILE" not in env and sources == {}
    assert result.warnings == [
        "mcp-sidecar: redis serves TLS only (args --port 0 --tls-port), no CA found in the pod's Secrets: "
        'set mcp-sidecar.dox/tls-secret: NAME (with ca.crt) or mcp-sidecar.dox/tls: "false"; until then the sidecar '
        "verifies against the system CAs",
        "mcp-sidecar: redis requires TLS client certificates and none were found in the Secrets the pod mounts: set "
        "mcp-sidecar.dox/tls-secret: NAME (with ca.crt, tls.crt, tls.key), or the datastore refuses the sidecar"]
    # The admission response clips warnings at 256 characters: both fit whole.
    assert all(len(w) <= MAX_WARNING_CHARS for w in result.warnings)

def test_annotations_force_tls_and_name_the_secret() -> None:
    pod = _redis_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/tls": "true", "mcp-sidecar.dox/tls-secret": "redis-certs",
                                      "mcp-sidecar.dox/tls-server-name": "Redis.Prod.svc"}
    result, env, sources = _inject(pod)
    assert env["REDIS_TLS"] == "true" and env["REDIS_TLS_SERVER_NAME"] == "redis.prod.svc"
    assert sources == {"redis-certs": {"ca.crt": "ca.crt", "tls.crt": "tls.crt", "tls.key": "tls.key"}}
    assert result.warnings == []


def test_annotation_turns_detected_tls_off() -> None:
    template = _template("chart-elastic-es8.yaml")
    template["metadata"]["annotations"] = {"mcp-sidecar.dox/tls": "false"}
    result, env, sources = _inject(template)
    assert "ES_SCHEME" not in env and sources == {}
    assert all("mcp-sidecar-tls" != v["name"] for v in result.rendered.volumes)


@pytest.mark.parametrize("annotation,value", [("tls", "yes please"), ("tls-secret", "Not_A_Name"),
                                              ("tls-server-name", "bad name")])
def test_invalid_tls_annotations_take_the_invalid_override_path(annotation: str, value: str) -> None:
    pod = _redis_pod()
    pod["metadata"]["annotations"] = {f"mcp-sidecar.dox/{annotation}": value}
    result = evaluate(pod, None, default_config())
    assert not result.injected and result.skip_reason.value == "invalid-override"
    assert f"mcp-sidecar.dox/{annotation}" in result.warnings[0]


@pytest.mark.parametrize("volume,mount,expected", [
    ({"name": "pw", "projected": {"sources": [{"secret": {"name": "s1"}}]}},
     {"name": "pw", "mountPath": "/run/pw"}, {"name": "s1", "key": "REDIS_PASSWORD"}),
    ({"name": "pw", "projected": {"sources": [{"configMap": {"name": "c"}},
                                              {"secret": {"name": "s2", "items": [{"key": "k", "path": "REDIS_PASSWORD"}]}}]}},
     {"name": "pw", "mountPath": "/run/pw"}, {"name": "s2", "key": "k"}),
    ({"name": "pw", "secret": {"secretName": "s3"}},
     {"name": "pw", "mountPath": "/run/pw/REDIS_PASSWORD", "subPath": "pass"}, {"name": "s3", "key": "pass"}),
])
def test_password_files_follow_projected_and_subpath_mounts(volume, mount, expected) -> None:
    pod = _redis_pod(env=[{"name": "REDIS_PASSWORD_FILE", "value": "/run/pw/REDIS_PASSWORD"}], volumeMounts=[mount])
    pod["spec"]["volumes"] = [volume]
    result, env, _ = _inject(pod)
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": expected}
    assert result.warnings == []


def test_requirepass_literal_is_not_copied() -> None:
    result, env, _ = _inject(_redis_pod(args=["--requirepass", "hunter2"]))
    assert "REDIS_PASSWORD" not in env
    assert any("--requirepass is a literal value" in w for w in result.warnings)
    assert not any("hunter2" in w for w in result.warnings)


def test_unmapped_secret_warning_is_bounded() -> None:
    """Echoed pod input is clipped: a pod with many long Secret names gives a short warning."""
    env = [{"name": f"X{i}" * 40, "valueFrom": {"secretKeyRef": {"name": f"s{i}" * 60, "key": "k"}}} for i in range(50)]
    result, _, _ = _inject(_redis_pod(env=env))
    assert len(result.warnings) == 1 and len(result.warnings[0]) < 800
    assert "and 47 more" in result.warnings[0]


def _es_pod(image: str, env: list[dict[str, str]] | None = None, backend: str = "elasticsearch") -> dict[str, Any]:
    container = {"name": backend, "image": image, "env": env or [], "ports": [{"name": "http", "containerPort": 9200}]}
    return {"metadata": {"labels": {"mcp-sidecar.dox/backend": backend}}, "spec": {"containers": [container]}}


@pytest.mark.parametrize("pod,https", [
    (_es_pod("docker.elastic.co/elasticsearch/elasticsearch:8.15.3"), True),
    (_es_pod("docker.elastic.co/elasticsearch/elasticsearch:8.15.3",
             [{"name": "xpack.security.http.ssl.enabled", "value": "false"}]), False),
    (_es_pod("docker.elastic.co/elasticsearch/elasticsearch:8.15.3", [{"name": "xpack.security.enabled", "value": "false"}]), False),
    (_es_pod("docker.elastic.co/elasticsearch/elasticsearch:7.17.10"), False),
    # bitnami's image keeps security off unless asked (ELASTICSEARCH_ENABLE_SECURITY + REST TLS).
    (_es_pod("docker.io/bitnami/elasticsearch:8.13.0-debian-12-r0"), False),
    (_es_pod("opensearchproject/opensearch:2.19.1", backend="opensearch"), True),
    (_es_pod("opensearchproject/opensearch:2.19.1", [{"name": "DISABLE_SECURITY_PLUGIN", "value": "true"}],
             backend="opensearch"), False),
    (_es_pod("opensearchproject/opensearch:2.19.1", [{"name": "plugins.security.ssl.http.enabled", "value": "false"}],
             backend="opensearch"), False),
], ids=["es8", "es8-http-ssl-off", "es8-security-off", "es7", "bitnami-es8", "opensearch", "opensearch-no-security",
        "opensearch-http-ssl-off"])
def test_image_defaults(pod: dict[str, Any], https: bool) -> None:
    """Elasticsearch 8 and OpenSearch serve HTTPS unless the pod turns it off; their CA is generated
    inside the container, so the sidecar is told, and the warning names the annotation."""
    if pod["metadata"]["labels"]["mcp-sidecar.dox/backend"] not in default_config().backends:
        pytest.skip("no opensearch backend configured")
    result, env, _ = _inject(pod)
    assert (env.get("ES_SCHEME") == "https") is https
    assert any("mcp-sidecar.dox/tls-secret" in w for w in result.warnings) is https


@pytest.mark.parametrize("env_from,expected", [
    ([{"secretRef": {"name": "redis-env"}}], {"name": "redis-env", "key": "SECRET_PASS", "optional": True}),
    ([{"secretRef": {"name": "redis-env"}, "prefix": "SECRET_"}], {"name": "redis-env", "key": "PASS", "optional": True}),
    # Two sources: which one holds it is unknown; a warning names both instead.
    ([{"secretRef": {"name": "a"}}, {"configMapRef": {"name": "b"}}], None),
])
def test_requirepass_variable_from_env_from(env_from, expected) -> None:
    result, env, _ = _inject(_redis_pod(command=["sh", "-c", 'exec redis-server --requirepass "$SECRET_PASS"'],
                                        envFrom=env_from))
    if expected is None:
        assert "REDIS_PASSWORD" not in env and "envFrom Secret a" in result.warnings[0]
    else:
        assert env["REDIS_PASSWORD"] == {"secretKeyRef": expected} and result.warnings == []


def test_a_repeated_env_name_counts_by_its_last_entry() -> None:
    """Detection reads each container's env through one map per pod; a name given twice is read as
    its last entry (as before the map was shared), in the password and the TLS settings alike."""
    pod = {"metadata": {"labels": {"mcp-sidecar.dox/backend": "redis"}}, "spec": {
        "containers": [{"name": "redis", "image": "bitnami/redis:7", "env": [
            {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "old", "key": "pw"}}},
            {"name": "REDIS_TLS_ENABLED", "value": "yes"},
            *({"name": f"APP_{i}", "value": "x"} for i in range(500)),
            {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "new", "key": "pw"}}},
            {"name": "REDIS_TLS_ENABLED", "value": "no"}]}]}}
    result, env, _ = _inject(pod)
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "new", "key": "pw"}}
    assert "REDIS_TLS" not in env and not any("TLS" in w for w in result.warnings)
