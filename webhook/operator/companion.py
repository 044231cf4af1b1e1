"""The companion ``<workload>-mcp`` Service: the MCP port reachable without changing the chart."""

from __future__ import annotations

from typing import Any, Mapping

from webhook.engine.constants import DOMAIN, LABEL_BACKEND, SIDECAR_PORT_NAME
from webhook.operator.propagation import template_labels

#: Label on companion Services naming their workload (and marking them as ours).
LABEL_COMPANION_OF = f"{DOMAIN}/companion-of"
MANAGED_BY = {"app.kubernetes.io/managed-by": "mcp-sidecar-injector"}
MCP_SERVICE_PORT = 9000


def companion_name(workload_name: str) -> str:
    base = workload_name[: 63 - len("-mcp")].rstrip("-")
    return f"{base}-mcp"


def wants_companion(workload: Mapping[str, Any]) -> bool:
    return LABEL_BACKEND in template_labels(workload)


def desired_service(workload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Service for ``workload`` (a StatefulSet/Deployment/DaemonSet dict), or None if its
    selector cannot be expressed as a Service selector (matchExpressions only)."""
    metadata = workload.get("metadata") or {}
    selector = ((workload.get("spec") or {}).get("selector") or {})
    match_labels = selector.get("matchLabels") or {}
    if not match_labels or selector.get("matchExpressions"):
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": companion_name(metadata["name"]),
            "namespace": metadata.get("namespace"),
            "labels": {**MANAGED_BY, LABEL_COMPANION_OF: metadata["name"][:63]},
            "ownerReferences": [
                {
                    "apiVersion": workload.get("apiVersion", "apps/v1"),
                    "kind": workload["kind"],
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": dict(match_labels),
            "ports": [{"name": SIDECAR_PORT_NAME, "port": MCP_SERVICE_PORT, "targetPort": SIDECAR_PORT_NAME, "protocol": "TCP"}],
        },
    }


def service_differs(live: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    spec = live.get("spec") or {}
    return spec.get("selector") != desired["spec"]["selector"] or [
        (p.get("name"), p.get("port"), p.get("targetPort")) for p in spec.get("ports") or []
    ] != [(p["name"], p["port"], p["targetPort"]) for p in desired["spec"]["ports"]]
