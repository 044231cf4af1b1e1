"""The sidecars against real TLS datastores, as the injector configures them for TLS-only pods.

Redis: Debian's redis-server with ``--port 0 --tls-port N`` and ``--requirepass``, with and without
``--tls-auth-clients``. Elasticsearch: the real node behind nginx doing TLS + basic auth (ES 8
security's outside behaviour). Certificates name a Service, never localhost: the sidecar dials
loopback, so the chain is verified against the CA and the hostname only when ``*_TLS_SERVER_NAME``
says which name to expect (sidecars/common/tls.py).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.backends.redis_server import RedisServer
from tests.backends.tls import TestPKI, TlsFront, nginx_binary, redis_cli, redis_tls_files
from webhook.engine.config import default_config
from webhook.engine.constants import TOKEN_SECRET_KEY, TOKEN_SECRET_NAME
from webhook.engine.injection import evaluate
from webhook.cli.manifests import POD_TEMPLATE_PATHS

from .conftest import redis_env
from .helpers import DEFAULT_TOKEN, SidecarProcess, call, error_text

pytestmark = pytest.mark.slow

SERVICE = "redis-master.demo.svc.cluster.local"
ES_SERVICE = "elasticsearch-master.demo.svc"
ES_PASSWORD = "elastic-Pa55-w0rd"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return TestPKI(tmp_path_factory.mktemp("pki"), SERVICE, "redis-master.demo.svc", ES_SERVICE)


@pytest.fixture(scope="module")
def redis_mtls(pki):
    """TLS only, client certificates required, password: bitnami redis with tls.authClients (default)."""
    with RedisServer(tls=redis_tls_files(pki, auth_clients=True), password="tls-pw") as server:
        redis_cli(server, pki, "SET", "greeting", "hello over mTLS")
        yield server


@pytest.fixture(scope="module")
def redis_tls(pki):
    """TLS only, no client certificates (``--tls-auth-clients no``), password."""
    with RedisServer(tls=redis_tls_files(pki, auth_clients=False), password="tls-pw") as server:
        redis_cli(server, pki, "SET", "greeting", "hello over TLS")
        yield server


def tls_env(server: RedisServer, pki: TestPKI, **extra: str) -> dict[str, str]:
    # "localhost", as the injector sets it: the certificate does not name it.
    return redis_env(server, **{"REDIS_HOST": "localhost", "REDIS_TLS": "true", "REDIS_TLS_CA_FILE": str(pki.ca),
                                **extra})


@contextlib.contextmanager
def sidecars(backend: str, envs: list[dict[str, str]]):
    """Several sidecars started at once (each start is mostly Python imports)."""
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(contextlib.closing(SidecarProcess(backend, env))) for env in envs]
        with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
            list(pool.map(SidecarProcess.start, procs))
        yield procs


def events(sidecar: SidecarProcess, name: str) -> list[dict]:
    return [line for line in sidecar.audit_lines() if line.get("event") == name]


def test_redis_mtls_with_server_name_answers(redis_mtls, pki):
    env = tls_env(redis_mtls, pki, REDIS_TLS_CERT_FILE=str(pki.client_cert), REDIS_TLS_KEY_FILE=str(pki.client_key),
                  REDIS_TLS_SERVER_NAME=SERVICE)
    with SidecarProcess("redis", env) as sidecar:
        assert call(sidecar.url, "get", {"key": "greeting"}).structured_content["value"] == "hello over mTLS"
        assert sidecar.get("/health").json()["reachable"] is True
        [tls] = events(sidecar, "tls")
        assert tls["hostname_check"] is True and tls["server_name"] == SERVICE and tls["client_certificate"] is True


def test_redis_tls_without_server_name_verifies_the_chain_only(redis_tls, pki):
    """The injector may not know the Service name: the chain is still verified, the skipped hostname
    check is stated at startup."""
    with SidecarProcess("redis", tls_env(redis_tls, pki)) as sidecar:
        assert call(sidecar.url, "get", {"key": "greeting"}).structured_content["value"] == "hello over TLS"
        [tls] = events(sidecar, "tls")
        assert tls["verify"] == "chain" and tls["hostname_check"] is False
        assert "loopback" in tls["message"] and "REDIS_TLS_SERVER_NAME" in tls["message"]


def test_redis_tls_failures_are_explicit_and_never_fall_back(redis_mtls, redis_tls, pki):
    """Wrong CA, wrong server name, missing client certificate: each one says what to fix, in the
    tool error and in /health, and no data comes back."""
    cases = [
        (redis_tls, {"REDIS_TLS_CA_FILE": str(pki.other_ca)}, ["certificate verify failed", "REDIS_TLS_CA_FILE"]),
        (redis_tls, {"REDIS_TLS_SERVER_NAME": "redis-replicas.other.svc"},
         ["certificate verify failed", "redis-replicas.other.svc", "REDIS_TLS_SERVER_NAME"]),
        (redis_mtls, {}, ["client certificate", "REDIS_TLS_CERT_FILE"]),
    ]
    with sidecars("redis", [tls_env(server, pki, **extra) for server, extra, _ in cases]) as procs:
        for sidecar, (_, extra, expected) in zip(procs, cases):
            result = call(sidecar.url, "get", {"key": "greeting"})
            assert result.is_error and result.structured_content is None
            text = error_text(result)
            health = sidecar.get("/health")
            for needle in expected:
                assert needle in text, (extra, text)
                assert needle in health.json()["last_error"], (extra, health.text)
            assert health.status_code == 503
            assert "hello" not in text


def test_redis_plaintext_client_on_a_tls_port_is_told_to_enable_tls(redis_tls):
    with SidecarProcess("redis", redis_env(redis_tls)) as sidecar:
        result = call(sidecar.url, "get", {"key": "greeting"})
        assert result.is_error and "REDIS_TLS=true" in error_text(result)


def test_redis_verify_off_is_an_explicit_logged_opt_out(redis_tls, pki):
    env = tls_env(redis_tls, pki, REDIS_TLS_CA_FILE=str(pki.other_ca), REDIS_TLS_VERIFY="false")
    with SidecarProcess("redis", env) as sidecar:
        assert call(sidecar.url, "get", {"key": "greeting"}).structured_content["value"] == "hello over TLS"
        [warning] = events(sidecar, "config_warning")
        assert warning["setting"] == "REDIS_TLS_VERIFY=false" and "not verified" in warning["message"]


# ----------------------------------------------------------------------------- Elasticsearch
@pytest.fixture(scope="module")
def es_front(es_node, pki):
    if nginx_binary() is None:
        pytest.fail("nginx is not installed: scripts/setup.sh installs the Debian package")
    with TlsFront(upstream_port=es_node.port, pki=pki, password=ES_PASSWORD) as front:
        assert front.request("/_cluster/health", auth=False)[0] == 401
        yield front


def es_tls_env(front: TlsFront, pki: TestPKI, **extra: str) -> dict[str, str]:
    env = {"ES_HOST": "localhost", "ES_PORT": str(front.port), "ES_SCHEME": "https", "ES_CA_CERT": str(pki.ca),
           "ES_USERNAME": "elastic", "ES_PASSWORD": ES_PASSWORD}
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def test_es_https_basic_auth_answers(es_front, pki):
    envs = [es_tls_env(es_front, pki, ES_TLS_SERVER_NAME=ES_SERVICE), es_tls_env(es_front, pki)]
    with sidecars("elasticsearch", envs) as (sidecar, chain_only):
        result = call(sidecar.url, "search", {"index": "books", "query": {"match": {"title": "redis"}}, "size": 3})
        assert not result.is_error, error_text(result)
        assert result.structured_content["total"] == 15 and len(result.structured_content["hits"]) == 3
        assert sidecar.get("/health").json()["reachable"] is True
        [tls] = events(sidecar, "tls")
        assert tls["hostname_check"] is True and tls["server_name"] == ES_SERVICE
        assert call(chain_only.url, "count", {"index": "books"}).structured_content["count"] == 30
        assert events(chain_only, "tls")[0]["hostname_check"] is False


def test_es_tls_and_auth_failures_are_explicit(es_front, pki):
    cases = [
        ({"ES_USERNAME": "", "ES_PASSWORD": ""}, ["401", "no credentials", "ES_USERNAME/ES_PASSWORD"]),
        ({"ES_PASSWORD": "wrong"}, ["rejected the credentials"]),
        ({"ES_CA_CERT": str(pki.other_ca)}, ["certificate verify failed", "ES_CA_CERT"]),
        ({"ES_TLS_SERVER_NAME": "search.other.svc"}, ["certificate verify failed", "ES_TLS_SERVER_NAME"]),
    ]
    with sidecars("elasticsearch", [es_tls_env(es_front, pki, **extra) for extra, _ in cases]) as procs:
        for sidecar, (extra, expected) in zip(procs, cases):
            result = call(sidecar.url, "count", {"index": "books"})
            assert result.is_error, extra
            health = sidecar.get("/health")
            assert health.status_code == 503
            for needle in expected:
                assert needle in error_text(result), (extra, error_text(result))
                assert needle in health.json()["last_error"], (extra, health.text)


# ----------------------------------------------------------------------------- engine -> sidecar
INPUTS = Path(__file__).resolve().parents[1] / "golden" / "inputs"


def chart_template(name: str) -> dict[str, Any]:
    """The pod template of a chart-shaped manifest (tests/golden/inputs)."""
    node = yaml.safe_load((INPUTS / name).read_text())
    for token in POD_TEMPLATE_PATHS.get(node["kind"], ()):
        node = node[token]
    return node


def engine_sidecar_env(template: dict[str, Any], secrets: dict[str, dict[str, bytes]], tmp: Path) -> dict[str, str]:
    """Render the sidecar with the engine, then do what the kubelet would: Secret volumes (projected
    or not, ``items`` or all keys, ``optional``) become files under ``tmp``, ``secretKeyRef`` envs
    their values, and env paths under a mount point the local copies."""
    result = evaluate(copy.deepcopy(template), None, default_config())
    assert result.injected, result.message
    container = result.rendered.container
    volumes = {v["name"]: v for v in result.rendered.volumes}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        volume, local = volumes[mount["name"]], tmp / mount["name"]
        local.mkdir()
        if "projected" in volume:
            sources = [source["secret"] for source in volume["projected"]["sources"]]
        elif "secret" in volume:
            sources = [{**volume["secret"], "name": volume["secret"]["secretName"]}]
        else:
            sources = []  # the /tmp emptyDir
        for source in sources:
            data = secrets.get(source["name"])
            if data is None:
                assert source.get("optional"), f"the pod would not start: Secret {source['name']} is missing"
                continue
            for item in source.get("items") or [{"key": k, "path": k} for k in data]:
                if item["key"] in data:
                    (local / item["path"]).write_bytes(data[item["key"]])
        mounts[mount["mountPath"]] = local
    env = {}
    for entry in container["env"]:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]].decode()
        else:
            value = entry["value"]
            for path, local in mounts.items():
                if value.startswith(path + "/"):
                    value = str(local) + value[len(path):]
        env[entry["name"]] = value
    return env


def _pem(path: Path) -> bytes:
    return path.read_bytes()


def test_engine_rendered_sidecar_reaches_bitnami_tls_redis(redis_mtls, pki, tmp_path):
    """bitnami/redis with tls.enabled + authClients: the engine's env and CA/client-certificate mount,
    as the kubelet would lay them out, get the sidecar through a real mTLS Redis (chart port 6379
    mapped to the test server's port: the only change)."""
    template = chart_template("chart-bitnami-redis-tls.yaml")
    template["metadata"].setdefault("annotations", {})["mcp-sidecar.dox/tls-server-name"] = SERVICE
    secrets = {
        "cache-redis": {"redis-password": redis_mtls.password.encode()},
        # The chart's certificate Secret: the server's own certificate, which its clients present too.
        "cache-redis-crt": {"ca.crt": _pem(pki.ca), "tls.crt": _pem(pki.server_cert), "tls.key": _pem(pki.server_key)},
        TOKEN_SECRET_NAME: {TOKEN_SECRET_KEY: DEFAULT_TOKEN.encode()},
    }
    env = engine_sidecar_env(template, secrets, tmp_path)
    assert (env["REDIS_HOST"], env["REDIS_PORT"], env["REDIS_TLS"]) == ("localhost", "6379", "true")
    assert env["REDIS_TLS_SERVER_NAME"] == SERVICE and Path(env["REDIS_TLS_KEY_FILE"]).is_file()
    env["REDIS_PORT"] = str(redis_mtls.port)
    del env["MCP_PORT"]
    with SidecarProcess("redis", env) as sidecar:
        assert call(sidecar.url, "get", {"key": "greeting"}).structured_content["value"] == "hello over mTLS"
        assert events(sidecar, "tls")[0]["client_certificate"] is True


def test_engine_rendered_sidecar_reaches_elastic_chart_es8(es_front, pki, tmp_path):
    """elastic/elasticsearch 8 in its default install (HTTPS, user elastic): the engine's env, CA
    mount and credentials Secret get the sidecar through the TLS + basic-auth front."""
    secrets = {
        "elasticsearch-master-certs": {"ca.crt": _pem(pki.ca), "tls.crt": _pem(pki.server_cert),
                                       "tls.key": _pem(pki.server_key)},
        "elasticsearch-master-credentials": {"username": b"elastic", "password": ES_PASSWORD.encode()},
        TOKEN_SECRET_NAME: {TOKEN_SECRET_KEY: DEFAULT_TOKEN.encode()},
    }
    env = engine_sidecar_env(chart_template("chart-elastic-es8.yaml"), secrets, tmp_path)
    assert (env["ES_HOST"], env["ES_PORT"], env["ES_SCHEME"]) == ("localhost", "9200", "https")
    env["ES_PORT"] = str(es_front.port)
    del env["MCP_PORT"]
    with SidecarProcess("elasticsearch", env) as sidecar:
        result = call(sidecar.url, "search", {"index": "books", "query": {"term": {"tag": "t1"}}, "size": 1})
        assert not result.is_error, error_text(result)
        assert result.structured_content["total"] == 10


# ----------------------------------------------------------------------------- settings (no servers)
@pytest.mark.parametrize("host,server_name,checked", [
    ("localhost", None, False), ("127.0.0.1", None, False), ("::1", None, False),
    ("localhost", SERVICE, True),
    # Not loopback: someone else could answer there, so the name dialled must be in the certificate.
    ("redis.prod.svc", None, True), ("10.1.2.3", None, True),
])
def test_hostname_is_skipped_only_for_loopback_without_a_server_name(host, server_name, checked):
    from sidecars.common.tls import TlsSettings, client_context

    context = client_context(TlsSettings(host=host, server_name=server_name))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is checked


@pytest.mark.parametrize("backend,env,named", [
    ("redis", {"REDIS_TLS_KEY_FILE": "{key}"}, "REDIS_TLS_CERT_FILE"),
    ("redis", {"REDIS_TLS_CA_FILE": "{not_pem}"}, "REDIS_TLS_CA_FILE"),
    ("redis", {"REDIS_TLS_CERT_FILE": "{ca}", "REDIS_TLS_KEY_FILE": "{key}"}, "REDIS_TLS_CERT_FILE"),  # not a pair
    ("elasticsearch", {"ES_CA_CERT": "{not_pem}"}, "ES_CA_CERT"),
])
def test_unusable_tls_files_exit_with_one_line_naming_the_setting(backend, env, named, pki, tmp_path):
    """A wrong file in the mounted Secret is a configuration error at start (exit 2), not a crash."""
    from sidecars.common.config import ConfigError
    from sidecars.elasticsearch.server import build as build_es
    from sidecars.redis.server import build as build_redis

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    files = {"key": str(pki.client_key), "ca": str(pki.ca), "not_pem": str(not_pem)}
    base = ({"REDIS_HOST": "localhost", "REDIS_PORT": "6379", "REDIS_TLS": "true"} if backend == "redis"
            else {"ES_HOST": "localhost", "ES_PORT": "9200", "ES_SCHEME": "https"})
    environ = {**base, "MCP_AUTH": "none", **{k: v.format(**files) for k, v in env.items()}}
    with pytest.raises(ConfigError) as info:
        (build_redis if backend == "redis" else build_es)(environ)
    assert named in str(info.value) and "\n" not in str(info.value)
