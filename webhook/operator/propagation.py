"""Label propagation: a workload's ``mcp-sidecar.dox/backend`` label reaches its pod template.

``kubectl label statefulset redis mcp-sidecar.dox/backend=redis`` only labels the StatefulSet;
pods are created from ``spec.template``. The operator copies the label there (which rolls the
pods) and records that it did with a marker annotation, so that removing the workload label
removes only a template label the operator itself added: a label the chart put in the template
stays, and Helm keeps owning everything else (the patch touches exactly these two keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from webhook.engine.constants import DOMAIN, LABEL_BACKEND

#: Workload annotation: the backend value the operator wrote into the pod template.
ANNOTATION_PROPAGATED = f"{DOMAIN}/propagated-backend"

WORKLOAD_KINDS = ("StatefulSet", "Deployment", "DaemonSet")


@dataclass(frozen=True)
class Propagation:
    """A JSON merge patch for the workload (None: nothing to do) and why."""

    patch: dict[str, Any] | None
    action: str  # "add", "update", "remove", "none", "conflict"
    message: str


def _get(obj: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    node: Any = obj
    for token in path:
        node = node.get(token) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def template_labels(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    return _get(workload, "spec", "template", "metadata", "labels")


def plan_propagation(workload: Mapping[str, Any]) -> Propagation:
    want = _get(workload, "metadata", "labels").get(LABEL_BACKEND)
    have = template_labels(workload).get(LABEL_BACKEND)
    marker = _get(workload, "metadata", "annotations").get(ANNOTATION_PROPAGATED)

    def patch(template_value: Any, marker_value: Any) -> dict[str, Any]:
        return {
            "metadata": {"annotations": {ANNOTATION_PROPAGATED: marker_value}},
            "spec": {"template": {"metadata": {"labels": {LABEL_BACKEND: template_value}}}},
        }

    if want is not None:
        if have == want:
            if marker is not None and marker != want:
                return Propagation({"metadata": {"annotations": {ANNOTATION_PROPAGATED: want}}}, "update", "marker follows the label")
            return Propagation(None, "none", "the pod template already carries the label")
        if have is not None and marker is None:
            return Propagation(None, "conflict", f"the pod template's own {LABEL_BACKEND}={have} (set by its chart) differs from the workload's {want}; leaving it")
        return Propagation(patch(want, want), "add" if have is None else "update", f"copied {LABEL_BACKEND}={want} into the pod template")
    if marker is None:
        return Propagation(None, "none", "no workload label and nothing propagated before")
    if have == marker:
        return Propagation(patch(None, None), "remove", f"removed the {LABEL_BACKEND} label the operator had added to the pod template")
    return Propagation({"metadata": {"annotations": {ANNOTATION_PROPAGATED: None}}}, "remove", "the template label was changed by someone else; only the marker is dropped")
