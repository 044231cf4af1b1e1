"""AdmissionReview (admission.k8s.io/v1) in, AdmissionReview out — pure, no HTTP.

Kept apart from the server (Linkerd style) so the wire contract is testable with plain bytes and
the engine never sees a malformed request.
"""

from __future__ import annotations

import base64

import orjson
from dataclasses import dataclass, field
from typing import Any

from webhook.engine.config import InjectorConfig
from webhook.engine.injection import InjectionResult, clip, evaluate

API_VERSION = "admission.k8s.io/v1"
#: The API server rejects request bodies over 3 MiB; a review may carry object and oldObject.
MAX_REVIEW_BYTES = 2 * 3 * 1024 * 1024 + 256 * 1024
#: Kubernetes truncates longer warnings; keep ours whole and readable.
MAX_WARNING_CHARS = 256
#: Kubernetes uids are 36 characters; the uid is echoed, so a longer one is refused.
MAX_UID_CHARS = 128


class BadReview(ValueError):
    """The request is not a usable AdmissionReview (HTTP 400)."""


@dataclass
class ReviewOutcome:
    """What the server needs for the HTTP answer, metrics and the log line."""

    body: dict[str, Any]
    operation: str = ""
    kind: str = ""
    namespace: str = ""
    name: str = ""
    #: ``injected``, ``skipped``, ``ignored`` (not a pod CREATE) or ``error`` (admitted unchanged).
    result: str = "ignored"
    injection: InjectionResult | None = None
    warnings: list[str] = field(default_factory=list)
    #: The engine's exception when ``result`` is ``error``, for the server's log.
    error: Exception | None = None


def parse_review(raw: bytes) -> dict[str, Any]:
    """Decode and check the envelope; raise ``BadReview`` with a message for the caller.

    Every field of the request that is read here or in ``review`` is type-checked: the API server
    always sends them well-typed, so a wrong type means a caller that is not the API server, and it
    gets a 400 that quotes at most ``MAX_QUOTED_CHARS`` of what it sent.
    """
    try:
        review = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"body is not valid JSON: {clip(str(exc), 120)}") from None
    if not isinstance(review, dict):
        raise BadReview("body must be a JSON object (an AdmissionReview)")
    if review.get("kind") != "AdmissionReview":
        raise BadReview(f"kind must be AdmissionReview, got {clip(review.get('kind'))}")
    if review.get("apiVersion") != API_VERSION:
        raise BadReview(f"apiVersion must be {API_VERSION} (admissionReviewVersions: [v1]), got {clip(review.get('apiVersion'))}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("AdmissionReview request has no uid")
    if len(uid) > MAX_UID_CHARS:
        raise BadReview(f"request.uid is longer than {MAX_UID_CHARS} characters")
    for key in ("operation", "namespace", "subResource"):
        if not isinstance(request.get(key) or "", str):
            raise BadReview(f"request.{key} must be a string")
    for key, inner in (("kind", "kind"), ("resource", "resource")):
        value = request.get(key) or {}
        if not isinstance(value, dict) or not isinstance(value.get(inner) or "", str):
            raise BadReview(f"request.{key} must be an object with a string {inner}")
    return request


def _response(uid: str, patch: list[dict[str, Any]] | None = None, warnings: list[str] | None = None, audit: dict[str, str] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
    if warnings:
        response["warnings"] = [w if len(w) <= MAX_WARNING_CHARS else w[: MAX_WARNING_CHARS - 3] + "..." for w in warnings]
    if audit:
        response["auditAnnotations"] = audit
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def encode(body: dict[str, Any]) -> bytes:
    """The AdmissionReview response as compact JSON bytes."""
    return orjson.dumps(body)


def review(raw: bytes, config: InjectorConfig, *, namespace_labels: dict[str, str] | None = None, native_supported: bool | None = None) -> ReviewOutcome:
    """Answer one AdmissionReview. Never refuses a pod: skips are ``allowed`` without a patch."""
    request = parse_review(raw)
    uid = request["uid"]
    kind = (request.get("kind") or {}).get("kind") or ""
    resource = (request.get("resource") or {}).get("resource") or ""
    operation = request.get("operation") or ""
    outcome = ReviewOutcome(body={}, operation=operation, kind=kind, namespace=request.get("namespace") or "")
    # Only pod creation is ours; sub-resources (pods/ephemeralcontainers, pods/binding...) pass through.
    if kind != "Pod" or resource not in ("pods", "") or request.get("subResource") or operation != "CREATE":
        outcome.body = _response(uid)
        return outcome
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise BadReview("Pod CREATE request has no object")
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    name = metadata.get("name") or metadata.get("generateName") or ""
    outcome.name = name if isinstance(name, str) else ""
    try:
        result = evaluate(pod, namespace_labels, config, native_supported=native_supported)
    except Exception as exc:  # a bug in the engine: the pod is admitted unchanged, never a 500
        outcome.error = exc
        outcome.result = "error"
        outcome.body = _response(uid, warnings=["mcp-sidecar not injected: internal error in the injector; see its log"])
        return outcome
    outcome.injection = result
    outcome.warnings = result.warnings
    if result.injected:
        outcome.result = "injected"
        audit = {"injected": result.backend or ""}
    else:
        outcome.result = "skipped"
        audit = {"skipped": result.skip_reason.value} if result.skip_reason else None
    outcome.body = _response(uid, result.patch, result.warnings, audit)
    return outcome
