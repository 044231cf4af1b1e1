"""Shared test helpers for the webhook tests: pods, validation, patch application."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import kubernetes_validate

from webhook.engine.constants import LABEL_BACKEND

#: Kubernetes versions every produced object is validated against (strict: unknown fields fail).
K8S_VERSIONS = ("1.29", "1.37")


def labelled_pod(backend: str = "redis", **spec_extra: Any) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "labels": {LABEL_BACKEND: backend}},
        "spec": {"containers": [{"name": backend, "image": f"{backend}:7"}]},
    }
    pod["spec"].update(spec_extra)
    return pod


def apply(document: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply like the API server does: on a copy, failing loudly on any bad op."""
    return jsonpatch.apply_patch(copy.deepcopy(document), patch)


def validate_strict(obj: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def admission_review(pod: Any, *, uid: str = "7d3a1a6e-0000-4000-8000-000000000001", operation: str = "CREATE", kind: str = "Pod", dry_run: bool = False, **request_extra: Any) -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionReview shaped like the API server sends it."""
    group, version = ("", "v1") if kind == "Pod" else ("apps", "v1")
    request = {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "name": (pod or {}).get("metadata", {}).get("name", "") if isinstance(pod, dict) else "",
        "namespace": "default",
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
        "object": pod,
        "oldObject": None,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    request.update(request_extra)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
