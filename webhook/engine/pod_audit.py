"""What is the injection state of a labelled pod? Pure classification shared by the operator
(missed/stale events, healing) and ``mcp-sidecar audit``.

- injected: carries the status annotation and the sidecar; ``stale`` when the hash recorded at
  injection differs from what the current configuration would inject now;
- missed: the engine would inject it but it has no sidecar (the webhook was down or unreachable
  and failurePolicy Ignore let the pod through);
- opted-out: the pod or its namespace said no;
- skipped: the engine declines, with its reason (unknown backend, invalid override...).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from webhook.engine.config import InjectorConfig
from webhook.engine.constants import ANNOTATION_STATUS, LABEL_BACKEND, SIDECAR_CONTAINER_NAME
from webhook.engine.injection import SkipReason, evaluate
from webhook.engine.render import INJECTED_VOLUMES

INJECTED, MISSED, OPTED_OUT, SKIPPED = "injected", "missed", "opted-out", "skipped"


@dataclass
class PodAudit:
    namespace: str
    pod: str
    owner: str
    backend: str
    state: str
    reason: str
    sidecar_ready: bool | None
    image: str
    stale: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sidecar_of(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The injected ``mcp-sidecar`` container (native or regular), or None."""
    spec = pod.get("spec") or {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if container.get("name") == SIDECAR_CONTAINER_NAME:
                return container
    return None


def sidecar_ready_state(pod: Mapping[str, Any]) -> bool | None:
    """The sidecar's readiness; None while the pod reports no container status yet."""
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for entry in status.get(key) or []:
            if entry.get("name") == SIDECAR_CONTAINER_NAME:
                return bool(entry.get("ready"))
    return None if not status.get("containerStatuses") else False


def without_injection(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The pod as the webhook saw it before injecting: sidecar, its volumes and status removed."""
    original = copy.deepcopy(dict(pod))
    spec = original.setdefault("spec", {})
    for key in ("initContainers", "containers"):
        if key in spec and spec[key] is not None:
            spec[key] = [c for c in spec[key] if c.get("name") != SIDECAR_CONTAINER_NAME]
    if spec.get("volumes"):
        spec["volumes"] = [v for v in spec["volumes"] if v.get("name") not in INJECTED_VOLUMES]
    annotations = (original.get("metadata") or {}).get("annotations") or {}
    annotations.pop(ANNOTATION_STATUS, None)
    return original


def owner_of(pod: Mapping[str, Any]) -> str:
    """``Kind/name`` of the controlling workload; a Deployment's ReplicaSet is shown as the Deployment."""
    metadata = pod.get("metadata") or {}
    for ref in metadata.get("ownerReferences") or []:
        if ref.get("controller"):
            kind, name = ref.get("kind"), str(ref.get("name"))
            template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
            if kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
                return f"Deployment/{name[: -len(template_hash) - 1]}"
            return f"{kind}/{name}"
    return "-"


def audit_pod(pod: Mapping[str, Any], namespace_labels: Mapping[str, str] | None, config: InjectorConfig) -> PodAudit:
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    sidecar = sidecar_of(pod)
    row = PodAudit(
        namespace=str(metadata.get("namespace", "")),
        pod=str(metadata.get("name", "")),
        owner=owner_of(pod),
        backend=str((metadata.get("labels") or {}).get(LABEL_BACKEND, "")),
        state=SKIPPED,
        reason="",
        sidecar_ready=sidecar_ready_state(pod) if sidecar else None,
        image=str(sidecar.get("image", "")) if sidecar else "",
        stale=False,
    )
    status_text = annotations.get(ANNOTATION_STATUS)
    if status_text is not None and sidecar is not None:
        row.state = INJECTED
        try:
            recorded = json.loads(status_text).get("hash")
        except (ValueError, AttributeError):
            recorded = None
        expected = evaluate(without_injection(pod), namespace_labels, config)
        if expected.rendered is None:
            row.stale, row.reason = True, f"the current configuration would not inject it ({expected.skip_reason.value if expected.skip_reason else 'unknown'})"
        elif recorded != expected.rendered.status["hash"]:
            row.stale, row.reason = True, "injected spec differs from the current configuration"
        return row
    if status_text is not None:
        row.state, row.reason = MISSED, "status annotation present but no mcp-sidecar container"
        return row
    result = evaluate(pod, namespace_labels, config)
    if result.injected:
        row.state, row.reason = MISSED, "labelled and injectable, but created without the sidecar (webhook down or unreachable?)"
    elif result.skip_reason in (SkipReason.OPTED_OUT, SkipReason.NAMESPACE_DISABLED):
        row.state, row.reason = OPTED_OUT, result.skip_reason.value
    else:
        row.state = SKIPPED
        row.reason = result.skip_reason.value if result.skip_reason else ""
        if result.skip_reason is SkipReason.SIDECAR_PRESENT:
            row.image = str(sidecar.get("image", "")) if sidecar else ""
    return row
