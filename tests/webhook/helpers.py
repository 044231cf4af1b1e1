"""Shared test helpers for the webhook tests: pods, validation, patch application."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import kubernetes_validate

from webhook.constants import LABEL_BACKEND

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
