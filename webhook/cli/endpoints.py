"""``mcp-sidecar ls``: every MCP endpoint (companion Services and injected pods), its backend,
readiness and auth, read with the user's own credentials.

Lists go through plain JSON (``get_json``), not the typed client: issue 12 measured the typed
deserialisation of pod lists as the slow part, and we only read a few fields. Every list is
label-selected (companion Services, labelled pods, the slices of those Services), so ``-A`` on a
big cluster reads only what is ours.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, TextIO
from urllib.parse import quote

from webhook.operator.companion import LABEL_COMPANION_OF, MCP_SERVICE_PORT
from webhook.engine.constants import (
    ANNOTATION_STATUS,
    AUTH_NONE,
    AUTH_VOLUME_NAME,
    LABEL_BACKEND,
    SIDECAR_PORT_NAME,
    TOKEN_SECRET_KEY,
    TOKEN_SECRET_NAME,
)
from webhook.engine.pod_audit import sidecar_of, sidecar_ready_state
from webhook.shared.kube import KubeAccessError, explain

MCP_PATH = "/mcp"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"


class ApiError(Exception):
    """A non-2xx answer of the API server: status, reason and a clipped body."""

    def __init__(self, status: int, reason: str, body: str = ""):
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.body = status, reason, body[:300]


def get_json(api: Any, path: str, **query: str) -> dict[str, Any]:
    """GET ``path`` as JSON through ``api`` (a kubernetes ApiClient: its auth and TLS), no models."""
    from kubernetes.client.rest import ApiException

    method, url, headers, _, _ = api.param_serialize(
        "GET", path, query_params=[(k, v) for k, v in query.items() if v], header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"])
    resp = api.call_api(method, url, header_params=headers)
    data = resp.read()
    if resp.status >= 400:
        raise ApiException(status=resp.status, reason=resp.reason, body=data[:300].decode(errors="replace"))
    return json.loads(data)


def list_path(resource: str, namespace: str | None, group: str = "") -> str:
    base = f"/apis/{group}" if group else "/api/v1"
    return f"{base}/namespaces/{quote(namespace, safe='')}/{resource}" if namespace else f"{base}/{resource}"


# ---- what a pod says about its sidecar ----------------------------------------------------------


def sidecar_ready(pod: Mapping[str, Any]) -> bool:
    return sidecar_ready_state(pod) is True


def sidecar_port(pod: Mapping[str, Any]) -> int | None:
    for port in (sidecar_of(pod) or {}).get("ports") or []:
        if port.get("name") == SIDECAR_PORT_NAME:
            return port.get("containerPort")
    return None


def auth_of(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(Secret, key) the sidecar reads its bearer token from, or None when auth is off.

    Read from the injected spec (the mounted volume), not from annotations: that is what the
    running sidecar really uses, whatever the configuration says today.
    """
    sidecar = sidecar_of(pod) or {}
    if any(e.get("name") == "MCP_AUTH" and e.get("value") == AUTH_NONE for e in sidecar.get("env") or []):
        return None
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if volume.get("name") == AUTH_VOLUME_NAME and isinstance(volume.get("secret"), dict):
            items = volume["secret"].get("items") or [{}]
            return str(volume["secret"].get("secretName", TOKEN_SECRET_NAME)), str(items[0].get("key", TOKEN_SECRET_KEY))
    return TOKEN_SECRET_NAME, TOKEN_SECRET_KEY


def injected(pod: Mapping[str, Any]) -> bool:
    return ANNOTATION_STATUS in ((pod.get("metadata") or {}).get("annotations") or {}) and sidecar_of(pod) is not None


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def ready_addresses(slices: Iterable[Mapping[str, Any]], port_name: str = SIDECAR_PORT_NAME) -> list[dict[str, Any]]:
    """Ready endpoints (each with its ``targetRef``) of slices that carry the MCP port."""
    out = []
    for s in slices:
        if not any(p.get("name") == port_name for p in s.get("ports") or []):
            continue
        for endpoint in s.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False and endpoint.get("addresses"):
                out.append(endpoint)
    return out


# ---- ls -------------------------------------------------------------------------------------------


@dataclass
class Endpoint:
    namespace: str
    kind: str  # Service or Pod
    name: str
    workload: str
    backend: str
    ready: str  # "2/3" for a Service (ready endpoints / pods), "yes"/"no" for a pod
    auth: str  # "Secret/key", or "none"
    url: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _auth_text(auth: tuple[str, str] | None) -> str:
    if auth is None:
        return AUTH_NONE
    return auth[0] if auth[1] == TOKEN_SECRET_KEY else f"{auth[0]}:{auth[1]}"


def collect(api: Any, namespace: str | None) -> list[Endpoint]:
    where = f"namespace {namespace}" if namespace else "all namespaces"
    try:
        services = get_json(api, list_path("services", namespace), labelSelector=LABEL_COMPANION_OF)["items"]
    except Exception as exc:
        raise explain(exc, f"list services in {where}") from None
    try:
        pods = get_json(api, list_path("pods", namespace), labelSelector=LABEL_BACKEND)["items"]
    except Exception as exc:
        raise explain(exc, f"list pods in {where}") from None
    slices: list[dict[str, Any]] = []
    names = sorted({s["metadata"]["name"] for s in services})
    if names:
        try:
            slices = get_json(api, list_path("endpointslices", namespace, "discovery.k8s.io/v1"),
                              labelSelector=f"{LABEL_SERVICE_NAME} in ({','.join(names)})")["items"]
        except Exception as exc:
            raise explain(exc, f"list endpointslices.discovery.k8s.io in {where}") from None
    pods = [p for p in pods if injected(p) and not p["metadata"].get("deletionTimestamp")]
    rows = []
    for svc in services:
        meta = svc["metadata"]
        ns, name = meta["namespace"], meta["name"]
        members = [p for p in pods if p["metadata"]["namespace"] == ns
                   and selects((svc.get("spec") or {}).get("selector"), p["metadata"].get("labels"))]
        mine = [s for s in slices if s["metadata"]["namespace"] == ns
                and (s["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME) == name]
        backends = sorted({p["metadata"]["labels"].get(LABEL_BACKEND, "") for p in members}) or ["-"]
        auths = sorted({_auth_text(auth_of(p)) for p in members}) or [_auth_text((TOKEN_SECRET_NAME, TOKEN_SECRET_KEY))]
        port = next((p.get("port") for p in (svc.get("spec") or {}).get("ports") or [] if p.get("name") == SIDECAR_PORT_NAME),
                    MCP_SERVICE_PORT)
        rows.append(Endpoint(ns, "Service", name, (meta.get("labels") or {}).get(LABEL_COMPANION_OF, "-"),
                             ",".join(backends), f"{len(ready_addresses(mine))}/{len(members)}", ",".join(auths),
                             f"http://{name}.{ns}.svc:{port}{MCP_PATH}"))
    for pod in pods:
        meta = pod["metadata"]
        ip = (pod.get("status") or {}).get("podIP")
        rows.append(Endpoint(meta["namespace"], "Pod", meta["name"], _owner(pod), meta["labels"].get(LABEL_BACKEND, ""),
                             "yes" if sidecar_ready(pod) else "no", _auth_text(auth_of(pod)),
                             f"http://{ip}:{sidecar_port(pod)}{MCP_PATH}" if ip else "-"))
    return sorted(rows, key=lambda r: (r.namespace, r.kind != "Service", r.name))


def _owner(pod: Mapping[str, Any]) -> str:
    from webhook.engine.pod_audit import owner_of

    return owner_of(pod)


def render(rows: list[Endpoint], output: str) -> str:
    if output == "json":
        return json.dumps({"endpoints": [r.as_dict() for r in rows]}, indent=2) + "\n"
    if not rows:
        return "no MCP endpoints found (label a workload: kubectl label statefulset NAME mcp-sidecar.dox/backend=redis)\n"
    header = ("NAMESPACE", "KIND", "NAME", "WORKLOAD", "BACKEND", "READY", "AUTH", "URL")
    table = [header] + [(r.namespace, r.kind, r.name, r.workload, r.backend, r.ready, r.auth, r.url) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table) + "\n"


def run_ls(api: Any, *, namespace: str | None, output: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        rows = collect(api, namespace)
    except KubeAccessError as exc:
        print(f"error: {str(exc)[:500]}", file=err)
        return 2
    out.write(render(rows, output))
    return 0
