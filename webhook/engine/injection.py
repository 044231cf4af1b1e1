"""The injection engine: pod dict + namespace labels + config -> decision and JSON Patch.

One pipeline, no I/O (the admission server, the offline ``inject`` command and the operator all
call ``evaluate``):

    should inject?  ->  parse & validate overrides  ->  render sidecar  ->  build patch

Re-injection is a no-op by construction: the patch always adds the status annotation, and a pod
carrying it is skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from itertools import chain, repeat
from operator import is_not
from typing import Any, Mapping

from webhook.engine.config import InjectorConfig
from webhook.engine.constants import (
    ANNOTATION_INJECT,
    ANNOTATION_STATUS,
    LABEL_BACKEND,
    LABEL_NAMESPACE_INJECTION,
    NAMESPACE_DISABLED_VALUE,
    SIDECAR_CONTAINER_NAME,
)
from webhook.engine.detect import EnvIndex
from webhook.engine.overrides import ANNOTATION_API_KEY_SECRET, InvalidOverride, Overrides, parse_overrides
from webhook.engine.overrides import ANNOTATION_IMAGE, image_allowed
from webhook.engine.patch import Operation, append_to_list, pointer, prepend_to_list, set_map_entry
from webhook.engine.render import Rendered, render_sidecar


class SkipReason(str, Enum):
    """Why a pod was not injected. Shared by the webhook (metrics, warnings) and the CLI."""

    NOT_LABELLED = "not-labelled"
    NAMESPACE_DISABLED = "namespace-disabled"
    OPTED_OUT = "opted-out"
    ALREADY_INJECTED = "already-injected"
    SIDECAR_PRESENT = "sidecar-present"
    UNKNOWN_BACKEND = "unknown-backend"
    HOST_NETWORK = "host-network"
    INVALID_OVERRIDE = "invalid-override"
    PORT_CONFLICT = "port-conflict"
    MALFORMED_POD = "malformed-pod"

    @property
    def warns(self) -> bool:
        """Reasons the user did not ask for: surfaced as an AdmissionResponse warning."""
        return self in _WARNING_REASONS


_WARNING_REASONS = {
    SkipReason.UNKNOWN_BACKEND,
    SkipReason.HOST_NETWORK,
    SkipReason.INVALID_OVERRIDE,
    SkipReason.PORT_CONFLICT,
    SkipReason.MALFORMED_POD,
}


@dataclass
class InjectionResult:
    """The engine's answer. ``patch`` is empty whenever ``skip_reason`` is set."""

    backend: str | None
    skip_reason: SkipReason | None = None
    message: str = ""
    patch: list[Operation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rendered: Rendered | None = None

    @property
    def injected(self) -> bool:
        return self.skip_reason is None


def _skip(backend: str | None, reason: SkipReason, message: str) -> InjectionResult:
    warnings = [f"mcp-sidecar not injected: {message}"] if reason.warns else []
    return InjectionResult(backend=backend, skip_reason=reason, message=message, warnings=warnings)


def _containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for key in ("initContainers", "containers") for c in spec.get(key) or [] if isinstance(c, dict)]


def _port_user(spec: Mapping[str, Any], port: int) -> str | None:
    for container in _containers(spec):
        for declared in container.get("ports") or []:
            if isinstance(declared, dict) and declared.get("containerPort") == port:
                return str(container.get("name"))
    return None


def _use_native(config: InjectorConfig, overrides: Overrides, spec: Mapping[str, Any], native_supported: bool | None) -> bool:
    if overrides.native is not None:
        return overrides.native
    if config.native_sidecar != "auto":
        return config.native_sidecar == "true"
    # auto: Job-style pods need native sidecars or they never complete; others follow the cluster.
    return bool(native_supported) or spec.get("restartPolicy") in ("Never", "OnFailure")


#: Longest piece of user input quoted in a message: warnings, logs and the CLI stay readable and
#: bounded whatever the pod carries.
MAX_QUOTED_CHARS = 64


def clip(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr`` of a scalar, cut to ``limit`` characters; containers are named by type only (their
    repr can be huge or nested deeper than Python's recursion limit)."""
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# The type checks below run over every env var of a pod, which may carry thousands: where they can,
# they test a whole list in one C-level pass (``all(map(isinstance, ...))``) instead of a Python loop.

def _list_of_maps(owner: Mapping[str, Any], key: str, where: str) -> str | None:
    value = owner.get(key)
    if value is not None and (not isinstance(value, list) or not all(map(isinstance, value, repeat(dict)))):
        return f"{where}.{key} is not a list of objects"
    return None


def _secret_ref_ok(ref: Any) -> bool:
    return ref is None or isinstance(ref, dict) and all(map(isinstance, ref.values(), repeat((str, bool))))


_is_not_none = partial(is_not, None)


def _value_froms_well_typed(env: list[dict[str, Any]]) -> bool:
    """Every valueFrom a map, every secretKeyRef a map of strings: in C-level passes over the whole
    list (and over the few valueFrom entries), no Python code per entry."""
    value_froms = list(filter(None, map(dict.get, env, repeat("valueFrom"))))  # `valueFrom: {}`/null: none
    if not all(map(isinstance, value_froms, repeat(dict))):
        return False
    refs = list(filter(_is_not_none, map(dict.get, value_froms, repeat("secretKeyRef"))))
    return all(map(isinstance, refs, repeat(dict))) and \
        all(map(isinstance, chain.from_iterable(map(dict.values, refs)), repeat((str, bool))))


def _env_problem(container: dict[str, Any], where: str, envs: EnvIndex) -> str | None:
    """What is wrong with the first bad entry of a container's env (a list of maps), or None.

    The names were checked while building the env map detection reads next (``envs``)."""
    env = container.get("env") or []
    if envs.all_named(container) and _value_froms_well_typed(env):
        return None  # the common case: no entry-by-entry walk
    for entry in env:
        value_from = entry.get("valueFrom") or {}
        if not isinstance(entry.get("name"), str) or not isinstance(value_from, dict):
            return f"{where}.env[] has no string name or a valueFrom that is not an object"
        if not _secret_ref_ok(value_from.get("secretKeyRef")):
            return f"{where}.env[].valueFrom.secretKeyRef is not an object of strings"
    return None


def _schema_problem(metadata: Mapping[str, Any], spec: Mapping[str, Any], envs: EnvIndex) -> str | None:
    """The first field the engine reads that has the wrong type, or None.

    The API server only sends schema-valid pods; anything else comes from ``inject -f`` or a
    caller that is not the API server. Such a pod is left unchanged with a warning (it is the API
    server's job to reject it, with its own precise message), never a crash.
    """
    for key in ("labels", "annotations"):
        entries = metadata.get(key) or {}
        if not isinstance(entries, dict) or not all(map(isinstance, entries.values(), repeat(str))):
            return f"metadata.{key} is not a map of strings"
    for key in ("name", "generateName"):
        if not isinstance(metadata.get(key) or "", str):
            return f"metadata.{key} is not a string"
    for key in ("initContainers", "containers", "volumes"):
        if problem := _list_of_maps(spec, key, "spec"):
            return problem
    for volume in spec.get("volumes") or []:
        if not isinstance(volume.get("name", ""), str):
            return "spec.volumes[].name is not a string"
        secret = volume.get("secret")
        if secret is not None and (not isinstance(secret, dict) or not isinstance(secret.get("secretName", ""), str)):
            return "spec.volumes[].secret is not an object with a string secretName"
        if isinstance(secret, dict):
            if problem := _list_of_maps(secret, "items", "spec.volumes[].secret"):
                return problem
            if not all(isinstance(i.get("key", ""), str) and isinstance(i.get("path", ""), str) for i in secret.get("items") or []):
                return "spec.volumes[].secret.items[] key/path are not strings"
    for key in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(key) or []):
            where = f"spec.{key}[{index}]"
            if not isinstance(container.get("name", ""), str) or not isinstance(container.get("image", ""), str):
                return f"{where}.name/image are not strings"
            for field_name in ("ports", "env", "volumeMounts"):
                if problem := _list_of_maps(container, field_name, where):
                    return problem
            if problem := _env_problem(container, where, envs):
                return problem
            for mount in container.get("volumeMounts") or []:
                if not all(isinstance(mount.get(k, ""), str) for k in ("name", "mountPath", "subPath")):
                    return f"{where}.volumeMounts[] name/mountPath/subPath are not strings"
    return None


def decide_skip(pod: Any, namespace_labels: Mapping[str, str] | None, config: InjectorConfig,
                envs: EnvIndex | None = None) -> InjectionResult | None:
    """The "should inject?" step: a skip result, or None when the pod goes on to rendering."""
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata") or {}, dict) or not isinstance(pod.get("spec"), dict):
        return _skip(None, SkipReason.MALFORMED_POD, "the object has no pod spec")
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    spec = pod["spec"]
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        return _skip(None, SkipReason.MALFORMED_POD, "metadata.labels/annotations are not maps")
    if LABEL_BACKEND in labels and (problem := _schema_problem(metadata, spec, envs or EnvIndex())):
        backend_label = labels.get(LABEL_BACKEND)
        return _skip(backend_label if isinstance(backend_label, str) else None, SkipReason.MALFORMED_POD, problem)
    backend = labels.get(LABEL_BACKEND)
    if backend is None:
        return _skip(None, SkipReason.NOT_LABELLED, f"the pod has no {LABEL_BACKEND} label")
    backend = str(backend)
    if (namespace_labels or {}).get(LABEL_NAMESPACE_INJECTION) == NAMESPACE_DISABLED_VALUE:
        return _skip(backend, SkipReason.NAMESPACE_DISABLED, f"the namespace is labelled {LABEL_NAMESPACE_INJECTION}={NAMESPACE_DISABLED_VALUE}")
    inject = annotations.get(ANNOTATION_INJECT)
    if inject is not None:
        value = str(inject).strip().lower()
        if value == "false":
            return _skip(backend, SkipReason.OPTED_OUT, f'the pod is annotated {ANNOTATION_INJECT}: "false"')
        if value != "true":
            return _skip(backend, SkipReason.INVALID_OVERRIDE, f'annotation {ANNOTATION_INJECT}={clip(inject)} is invalid: expected "true" or "false"')
    if ANNOTATION_STATUS in annotations:
        return _skip(backend, SkipReason.ALREADY_INJECTED, f"the pod already carries {ANNOTATION_STATUS}")
    if not isinstance(spec.get("containers"), list) or not spec["containers"]:
        return _skip(backend, SkipReason.MALFORMED_POD, "spec.containers is empty or not a list")
    if any(c.get("name") == SIDECAR_CONTAINER_NAME for c in _containers(spec)):
        return _skip(backend, SkipReason.SIDECAR_PRESENT, f"a container named {SIDECAR_CONTAINER_NAME} is already present")
    if backend not in config.backends:
        known = ", ".join(sorted(config.backends)) or "none configured"
        return _skip(backend, SkipReason.UNKNOWN_BACKEND, f"unknown backend {clip(backend)} in label {LABEL_BACKEND} (known: {known})")
    if spec.get("hostNetwork") is True:
        return _skip(backend, SkipReason.HOST_NETWORK, "the pod uses hostNetwork; the sidecar port would be opened on the node")
    return None


def build_patch(pod: dict[str, Any], rendered: Rendered) -> list[Operation]:
    """Add the sidecar, its volumes (/tmp, the token Secret) and the status annotation, creating lists/maps as needed."""
    native = rendered.container.get("restartPolicy") == "Always"
    ops: list[Operation] = []
    if native:
        ops += prepend_to_list(pod, ("spec", "initContainers"), rendered.container)
    else:
        ops += append_to_list(pod, ("spec", "containers"), rendered.container)
    present = {v.get("name") for v in pod["spec"].get("volumes") or [] if isinstance(v, dict)}
    for index, volume in enumerate(v for v in rendered.volumes if v["name"] not in present):
        # The first append may create the list; the list exists for the next ones.
        ops += append_to_list(pod, ("spec", "volumes"), volume) if index == 0 else \
            [{"op": "add", "path": pointer("spec", "volumes") + "/-", "value": volume}]
    status = json.dumps(rendered.status, sort_keys=True, separators=(",", ":"))
    ops += set_map_entry(pod, ("metadata", "annotations"), ANNOTATION_STATUS, status)
    return ops


def evaluate(
    pod: Any,
    namespace_labels: Mapping[str, str] | None,
    config: InjectorConfig,
    *,
    native_supported: bool | None = None,
) -> InjectionResult:
    """Decide and, when injecting, produce the JSON Patch for ``pod``.

    ``pod`` may be a Pod or a workload's pod template (``{"metadata":..., "spec":...}``).
    ``native_supported`` is whether the cluster runs native sidecars (None: unknown).
    """
    envs = EnvIndex()  # each container's env map, built by the malformed-pod check, read by detection
    skipped = decide_skip(pod, namespace_labels, config, envs)
    if skipped is not None:
        return skipped
    backend_name = pod["metadata"]["labels"][LABEL_BACKEND]
    backend = config.backends[backend_name]
    spec = pod["spec"]
    try:
        overrides = parse_overrides(pod["metadata"].get("annotations") or {})
        if overrides.api_key_secret is not None and not backend.api_key_env:
            raise InvalidOverride(ANNOTATION_API_KEY_SECRET, overrides.api_key_secret.name,
                                  f"no value: the {backend_name} backend takes no API key (elasticsearch only)")
    except InvalidOverride as exc:
        return _skip(backend_name, SkipReason.INVALID_OVERRIDE, str(exc))
    allowed_images = config.allowed_images_for(backend)
    if overrides.image is not None and not image_allowed(overrides.image, allowed_images):
        # The sidecar gets the datastore's credentials: the annotation may pick a tag of an allowed
        # image, not run an arbitrary one.
        return _skip(backend_name, SkipReason.INVALID_OVERRIDE,
                     f"annotation {ANNOTATION_IMAGE}={clip(overrides.image)} is not allowed: the image must be from "
                     f"{clip(', '.join(allowed_images), 200)} (configuration key allowedImages)")
    port = overrides.port or backend.port
    user = _port_user(spec, port)
    if user is not None:
        hint = "" if overrides.port else "; set the mcp-sidecar.dox/port annotation to a free port"
        return _skip(backend_name, SkipReason.PORT_CONFLICT, f"port {port} is already used by container {clip(user)}{hint}")
    rendered = render_sidecar(pod, backend, overrides, _use_native(config, overrides, spec, native_supported), envs)
    return InjectionResult(
        backend=backend_name,
        patch=build_patch(pod, rendered),
        warnings=list(rendered.warnings),
        rendered=rendered,
        message=f"injected {backend_name} sidecar",
    )
