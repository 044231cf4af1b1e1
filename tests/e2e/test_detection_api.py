"""The chart-shaped pods of tests/golden/inputs/chart-*.yaml through a real kube-apiserver calling our
webhook: the API server accepts the patched pod (the projected TLS volume, its modes and ``optional``
sources), stores the sidecar with the TLS env and mount, and hands our warnings to kubectl.

Pods stay Pending (no kubelet): what is checked is what the API server stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.webhook_process import WebhookProcess
from webhook.cli.manifests import POD_TEMPLATE_PATHS

pytestmark = pytest.mark.slow

INPUTS = Path(__file__).resolve().parent.parent / "golden" / "inputs"
TLS_DIR = "/var/run/secrets/mcp-sidecar-tls"


@pytest.fixture(scope="module")
def injector(control_plane, tmp_path_factory):
    process = WebhookProcess(tmp_path_factory.mktemp("injector-detection")).start()
    control_plane.register_mutating_webhook(process.url + "/mutate", process.ca_pem)
    yield process
    control_plane.unregister_mutating_webhook()
    process.stop()


def _pod(name: str) -> dict:
    document = yaml.safe_load((INPUTS / name).read_text())
    template = document
    for token in POD_TEMPLATE_PATHS.get(document["kind"], ()):
        template = template[token]
    metadata = {k: v for k, v in (template.get("metadata") or {}).items() if k in ("labels", "annotations")}
    spec = {**template["spec"], "automountServiceAccountToken": False}
    # A StatefulSet's volumeClaimTemplates become volumes of its pods: stand in with emptyDirs.
    declared = {v["name"] for v in spec.get("volumes") or []}
    claims = [t["metadata"]["name"] for t in (document.get("spec") or {}).get("volumeClaimTemplates") or []]
    spec["volumes"] = (spec.get("volumes") or []) + [{"name": c, "emptyDir": {}} for c in claims if c not in declared]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name.removesuffix(".yaml"), **metadata}, "spec": spec}


CASES = [
    # input, env the stored sidecar must have, the TLS Secret items, a warning kubectl must print
    ("chart-bitnami-redis-tls.yaml", {"REDIS_TLS": "true", "REDIS_TLS_CERT_FILE": f"{TLS_DIR}/tls.crt"},
     {"cache-redis-crt": ["ca.crt", "tls.crt", "tls.key"]}, None),
    ("chart-redis-ha-tls.yaml", {"REDIS_PORT": "6385", "REDIS_TLS": "true"},
     {"redis-ha-tls": ["ca.crt", "redis.crt", "redis.key"]}, None),
    ("chart-elastic-es8.yaml", {"ES_SCHEME": "https", "ES_CA_CERT": f"{TLS_DIR}/ca.crt"},
     {"elasticsearch-master-certs": ["ca.crt"]}, None),
    ("chart-redis-envfrom.yaml", {}, {}, "set mcp-sidecar.dox/password-secret: NAME:KEY"),
    ("elasticsearch-statefulset.yaml", {"ES_SCHEME": "https"}, {}, "mcp-sidecar.dox/tls-secret"),
]


@pytest.mark.parametrize("name,env,items,warning", CASES, ids=[c[0] for c in CASES])
def test_api_server_stores_the_detected_tls_sidecar(control_plane, injector, namespace, name, env, items, warning):
    proc = control_plane.kubectl("create", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(_pod(name)))
    pod = json.loads(proc.stdout)
    [sidecar] = [c for c in pod["spec"]["containers"] if c["name"] == "mcp-sidecar"]
    stored_env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert {k: stored_env.get(k) for k in env} == env
    volume = next((v for v in pod["spec"]["volumes"] if v["name"] == "mcp-sidecar-tls"), None)
    if items:
        stored = {s["secret"]["name"]: sorted(i["key"] for i in s["secret"]["items"]) for s in volume["projected"]["sources"]}
        assert stored == items
        assert all(s["secret"]["optional"] is True for s in volume["projected"]["sources"])
        assert {"name": "mcp-sidecar-tls", "mountPath": TLS_DIR, "readOnly": True} in sidecar["volumeMounts"]
        others = [c for c in pod["spec"]["containers"] if c["name"] != "mcp-sidecar"]
        assert all(m["name"] != "mcp-sidecar-tls" for c in others for m in c.get("volumeMounts") or [])
    else:
        assert volume is None
    if warning:
        assert warning in proc.stderr, proc.stderr
