"""The seed's deployment (deploy/examples/dox-asdlc) on real pods, both overlays.

Development (workloads.yaml as it is = values-development.yaml: the backend label on the Redis and
Elasticsearch pod templates): `kubectl apply` -> both StatefulSet pods run 2/2 Ready with the
injected mcp-sidecar -> the operator's companion Services redis-mcp / elasticsearch-mcp forward to
the sidecars -> GET /health is ok (the sidecar reaches its datastore inside the pod) -> MCP tool
calls answer with data written into the real Redis / Elasticsearch beforehand, through our own
client and through the MCP Inspector CLI.

Production (values-production.yaml: no backend label) -> the same StatefulSets run 1/1 Ready, with
no mcp-sidecar container and no companion Service.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid

import pytest
import yaml

from tests.node import kube
from tests.node.kube import BACKEND_LABEL, REPO, container_names

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "deploy" / "examples" / "dox-asdlc"
WORKLOADS = EXAMPLE / "workloads.yaml"
REDIS = "app.kubernetes.io/name=redis,app.kubernetes.io/part-of=dox-asdlc"
ES = "app.kubernetes.io/name=elasticsearch,app.kubernetes.io/part-of=dox-asdlc"
COMPANION_OF = "mcp-sidecar.dox/companion-of"
TIMEOUT = 180  # Elasticsearch: 512 MiB heap, a JVM start on 2 shared cores


# ---- helpers (local to this module) ----------------------------------------------------------


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _statefulset(docs: list[dict], name: str) -> dict:
    return next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == name)


def production_manifest() -> list[dict]:
    """workloads.yaml with values-production.yaml applied: its podLabels replace the development
    ones, so the Redis and Elasticsearch pod templates lose exactly the backend label."""
    docs = _docs(WORKLOADS.read_text())
    production = yaml.safe_load((EXAMPLE / "values-production.yaml").read_text())
    for name in ("redis", "elasticsearch"):
        labels = _statefulset(docs, name)["spec"]["template"]["metadata"]["labels"]
        labels.pop(BACKEND_LABEL)
        labels.update(production[name]["podLabels"])
    return docs


def companion_services(cp, namespace: str) -> dict[str, dict]:
    items = cp.kubectl_json("get", "services", "-n", namespace, "-l", COMPANION_OF)["items"]
    return {s["metadata"]["name"]: s for s in items}


def sidecar_env(pod: dict) -> dict[str, dict]:
    [sidecar] = [c for c in pod["spec"]["containers"] if c["name"] == "mcp-sidecar"]
    return {e["name"]: e for e in sidecar.get("env", [])}


def secret_value(cp, namespace: str, name: str, key: str) -> str:
    return base64.b64decode(cp.kubectl_json("get", "secret", "-n", namespace, name)["data"][key]).decode()


def http_put_json(url: str, body: dict, auth: tuple[str, str], timeout: float = 30) -> tuple[int, dict]:
    basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT",
                                 headers={"Content-Type": "application/json", "Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read())


def release_volumes(cp, namespace: str) -> None:
    """The node's provisioner makes Retain hostPath PVs; drop the ones bound to our claims."""
    for pv in cp.kubectl_json("get", "pv", "-l", "mcp-node.test/provisioned=true")["items"]:
        if (pv["spec"].get("claimRef") or {}).get("namespace") == namespace:
            cp.kubectl("delete", "pv", pv["metadata"]["name"], "--wait=false", "--ignore-not-found=true", check=False)


def own_namespace(cp) -> str:
    name = f"node-seed-{uuid.uuid4().hex[:8]}"
    cp.create_namespace(name)
    return name


def drop_namespace(cp, namespace: str) -> None:
    cp.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found=true", check=False)
    release_volumes(cp, namespace)


# ---- tests -------------------------------------------------------------------------------------


def test_overlays_and_manifest_agree():
    """workloads.yaml is the development overlay: its pod-template labels are exactly
    values-development.yaml's podLabels; production's are empty (what the production test applies)."""
    docs = _docs(WORKLOADS.read_text())
    development = yaml.safe_load((EXAMPLE / "values-development.yaml").read_text())
    production = yaml.safe_load((EXAMPLE / "values-production.yaml").read_text())
    for name in ("redis", "elasticsearch"):
        labels = _statefulset(docs, name)["spec"]["template"]["metadata"]["labels"]
        assert {k: v for k, v in labels.items() if k.startswith("mcp-sidecar.dox/")} == development[name]["podLabels"]
        assert production[name]["podLabels"] == {}


def test_development_overlay_serves_mcp_with_real_data(cp, injector, tmp_path):
    namespace = own_namespace(cp)
    try:
        started = time.monotonic()
        cp.kubectl("apply", "-n", namespace, "-f", str(WORKLOADS))

        # ---- both datastores run with the injected sidecar, 2/2 Ready
        [redis] = kube.wait_pods_ready(cp, namespace, REDIS, 1, containers=2, timeout=TIMEOUT)
        redis_ready = time.monotonic() - started
        [es] = kube.wait_pods_ready(cp, namespace, ES, 1, containers=2, timeout=TIMEOUT)
        es_ready = time.monotonic() - started
        print(f"\n[seed] redis 2/2 Ready after {redis_ready:.1f}s, elasticsearch 2/2 Ready after {es_ready:.1f}s")
        assert container_names(redis) == ["redis", "mcp-sidecar"]
        assert container_names(es) == ["elasticsearch", "mcp-sidecar"]
        images = {p["metadata"]["name"]: {s["name"]: s["image"] for s in p["status"]["containerStatuses"]}
                  for p in (redis, es)}
        assert images["redis-0"]["mcp-sidecar"] == "docker.io/mcp/redis:latest", images
        assert images["elasticsearch-0"]["mcp-sidecar"] == "docker.io/mcp/elasticsearch:latest", images
        # The sidecars reuse the datastores' Secret (referenced, never copied) and talk to localhost.
        secret = {"secretKeyRef": {"name": "dox-asdlc-datastores", "key": "redis-password"}}
        env = sidecar_env(redis)
        assert env["REDIS_PASSWORD"]["valueFrom"] == secret and env["REDIS_HOST"]["value"] == "localhost", env
        env = sidecar_env(es)
        secret = {"secretKeyRef": {"name": "dox-asdlc-datastores", "key": "elasticsearch-password"}}
        assert env["ES_PASSWORD"]["valueFrom"] == secret and env["ES_USERNAME"]["value"] == "elastic", env

        # ---- the operator's companion Services, one per labelled workload
        services = cp.wait_for(lambda: (s := companion_services(cp, namespace)) and len(s) == 2 and s,
                               60, "two companion Services")
        assert sorted(services) == ["elasticsearch-mcp", "redis-mcp"]
        assert services["redis-mcp"]["spec"]["selector"] == {
            "app.kubernetes.io/name": "redis", "app.kubernetes.io/part-of": "dox-asdlc"}

        # ---- Redis: a value written with redis-cli (password from the Secret, through env) ...
        key, value = f"seed:{uuid.uuid4().hex[:6]}", "written by redis-cli in the redis container"
        done = kube.exec_in(cp, namespace, "redis-0", "redis", "sh", "-c",
                            f'redis-cli --no-auth-warning -a "$REDIS_PASSWORD" SET {key} "{value}"')
        assert done.stdout.strip() == "OK", done.stdout + done.stderr

        # ... read back through the companion Service by our client and by the MCP Inspector
        with kube.port_forward(cp, namespace, "svc/redis-mcp", 9000) as port:
            health = kube.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
            assert health["status"] == "ok" and health["backend"] == "redis" and health["reachable"] is True, health
            url = f"http://127.0.0.1:{port}/mcp"
            headers = kube.auth_headers(cp, namespace)  # the token the operator provisioned
            out = kube.mcp_calls(url, ("get", {"key": key}), ("exists", {"keys": [key, key + ":absent"]}), headers=headers)
            assert "get" in out["tools"] and "set" not in out["tools"], out["tools"]  # read-only by default
            assert not out["get"]["is_error"], out["get"]
            assert out["get"]["structured"]["value"] == value
            assert out["exists"]["structured"]["count"] == 1, out["exists"]
            called = kube.inspector(url, "--header", f"Authorization: {headers['Authorization']}", "--method", "tools/call",
                                    "--tool-name", "get", "--tool-arg", f"key={key}",
                                    home=tmp_path)
            assert called["structuredContent"]["value"] == value, called

        # ---- Elasticsearch: a document indexed over HTTP through the application's Service ...
        doc = {"title": "MCP sidecar on a real node", "tag": uuid.uuid4().hex[:8]}
        with kube.port_forward(cp, namespace, "svc/knowledge-store", 9200) as port:
            kube.wait_http(f"http://127.0.0.1:{port}/_cluster/health", timeout=TIMEOUT)
            es_answers = time.monotonic() - started
            # elastic + the Secret's password, as against a secured Elasticsearch (the stand-in has no
            # x-pack security and ignores the header)
            password = secret_value(cp, namespace, "dox-asdlc-datastores", "elasticsearch-password")
            status, body = http_put_json(f"http://127.0.0.1:{port}/books/_doc/seed-1?refresh=true", doc,
                                         ("elastic", password))
            assert status == 201 and body["result"] == "created", body
        print(f"[seed] elasticsearch answered HTTP after {es_answers:.1f}s")

        # ... found through elasticsearch-mcp by our client and by the MCP Inspector
        with kube.port_forward(cp, namespace, "svc/elasticsearch-mcp", 9000) as port:
            health = kube.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
            assert health["status"] == "ok" and health["backend"] == "elasticsearch" and health["reachable"], health
            url = f"http://127.0.0.1:{port}/mcp"
            headers = kube.auth_headers(cp, namespace)
            out = kube.mcp_calls(url, ("count", {"index": "books"}),
                                 ("get_document", {"index": "books", "id": "seed-1"}),
                                 ("search", {"index": "books", "query": {"match": {"tag": doc["tag"]}}}), headers=headers)
            for name in ("count", "get_document", "search"):
                assert not out[name]["is_error"], out[name]
            assert out["count"]["structured"]["count"] == 1
            assert out["get_document"]["structured"]["found"] is True
            assert out["get_document"]["structured"]["source"] == doc
            hits = out["search"]["structured"]["hits"]
            assert [(h["id"], h["source"]) for h in hits] == [("seed-1", doc)], hits
            called = kube.inspector(url, "--header", f"Authorization: {headers['Authorization']}", "--method", "tools/call",
                                    "--tool-name", "get_document",
                                    "--tool-arg", "index=books", "--tool-arg", "id=seed-1", home=tmp_path)
            assert called["structuredContent"]["source"] == doc, called
        print(f"[seed] development overlay done in {time.monotonic() - started:.1f}s")
    finally:
        drop_namespace(cp, namespace)


def test_production_overlay_runs_without_sidecar(cp, injector):
    namespace = own_namespace(cp)
    try:
        started = time.monotonic()
        # Only the Secret, the Services and the two StatefulSets (what the overlay changes): the
        # orchestrator and workers Deployments are left out to keep the shared node's load low.
        manifest = [d for d in production_manifest() if d["kind"] != "Deployment"]
        cp.apply(manifest, "-n", namespace)
        [redis] = kube.wait_pods_ready(cp, namespace, REDIS, 1, containers=1, timeout=TIMEOUT)
        [es] = kube.wait_pods_ready(cp, namespace, ES, 1, containers=1, timeout=TIMEOUT)
        print(f"\n[seed] production: redis and elasticsearch 1/1 Ready after {time.monotonic() - started:.1f}s")
        for pod, main in ((redis, "redis"), (es, "elasticsearch")):
            assert container_names(pod) == [main], container_names(pod)
            assert BACKEND_LABEL not in pod["metadata"]["labels"]
            assert "mcp-sidecar.dox/status" not in (pod["metadata"].get("annotations") or {})
        # No companion Service: the operator, which makes one within a second or two for a labelled
        # workload (development test), still has made none a few seconds after the pods are Ready.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert companion_services(cp, namespace) == {}
            time.sleep(0.5)
        names = cp.kubectl("get", "services", "-n", namespace, "-o", "name").stdout.split()
        assert sorted(names) == ["service/knowledge-store", "service/redis"], names
    finally:
        drop_namespace(cp, namespace)
