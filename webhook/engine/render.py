"""Render the sidecar for one pod from what ``webhook.engine.detect`` found in it, as raw JSON.

Everything produced here is plain JSON-able data; no typed Kubernetes models, so no field is ever
dropped on the way.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from webhook import __version__
from webhook.engine.config import BackendConfig
from webhook.engine.constants import (
    ANNOTATION_AUTH,
    AUTH_MOUNT_PATH,
    AUTH_NONE,
    AUTH_VOLUME_NAME,
    DOMAIN,
    SIDECAR_CONTAINER_NAME,
    SIDECAR_PORT_NAME,
    TMP_VOLUME_NAME,
    TOKEN_SECRET_KEY,
    TOKEN_SECRET_NAME,
)
from webhook.engine.detect import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    TLS_MOUNT_PATH,
    EnvIndex,
    SecretFile,
    TlsDetection,
    detect_backend_port,
    detect_password,
    detect_tls,
    find_main_container,
    tls_secret_names,
)
from webhook.engine.overrides import ANNOTATION_TLS, ANNOTATION_TLS_SECRET, Overrides, quantity_value

AUTH_TOKEN_FILE_ENV = "MCP_AUTH_TOKEN_FILE"
AUTH_MODE_ENV = "MCP_AUTH"
#: Every volume the injector may add (stripped again by ``pod_audit.without_injection``).
TLS_VOLUME_NAME = "mcp-sidecar-tls"
INJECTED_VOLUMES = (TMP_VOLUME_NAME, AUTH_VOLUME_NAME, TLS_VOLUME_NAME)


@dataclass
class Rendered:
    container: dict[str, Any]
    #: The /tmp emptyDir, then (auth on) the token Secret volume, then (TLS) the datastore's CA.
    volumes: list[dict[str, Any]]
    status: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _resources(backend: BackendConfig, overrides: Overrides, warnings: list[str]) -> dict[str, Any]:
    resources = copy.deepcopy(dict(backend.resources))
    for section, key, value in (
        ("requests", "cpu", overrides.cpu_request),
        ("requests", "memory", overrides.memory_request),
        ("limits", "cpu", overrides.cpu_limit),
        ("limits", "memory", overrides.memory_limit),
    ):
        if value is not None:
            resources.setdefault(section, {})[key] = value
    # A request above its limit makes the API server reject the whole pod: an override must never
    # block a pod, so the limit is raised to the request, and the user is told.
    for key in ("cpu", "memory"):
        request = (resources.get("requests") or {}).get(key)
        limit = (resources.get("limits") or {}).get(key)
        req_value, limit_value = quantity_value(request), quantity_value(limit)
        if req_value is not None and limit_value is not None and req_value > limit_value:
            resources["limits"][key] = request
            warnings.append(f"mcp-sidecar: the sidecar's {key} request {request} is above its limit {limit}: "
                            f"the limit was raised to {request} (set {DOMAIN}/{key}-limit to choose another)")
    return resources


def auth_volume(overrides: Overrides) -> dict[str, Any]:
    """The token Secret as a volume, not an env var: the kubelet updates a mounted Secret in place, so
    ``rotate-token`` reaches running sidecars (about a minute) without restarting any pod.

    ``optional``: the pod starts even before the operator (or the user) created the Secret; the
    sidecar fails closed until the file appears. The key is always mounted as ``token``.
    """
    ref = overrides.auth_secret
    name = ref.name if ref is not None else TOKEN_SECRET_NAME
    key = (ref.key if ref is not None else None) or TOKEN_SECRET_KEY
    return {"name": AUTH_VOLUME_NAME,
            "secret": {"secretName": name, "optional": True, "items": [{"key": key, "path": TOKEN_SECRET_KEY}]}}


def auth_off_warning(source: str) -> str:
    return (f"mcp-sidecar: authentication is off ({source}): the MCP endpoint of this pod accepts calls without a "
            "credential from anything that can reach its port, and they run with the datastore's credentials")


def spec_hash(container: dict[str, Any], volumes: list[dict[str, Any]]) -> str:
    """Stable hash of what was injected; the operator compares it to spot stale sidecars."""
    canonical = json.dumps({"container": container, "volumes": volumes}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _tls_detection(spec: dict[str, Any], main: dict[str, Any] | None, backend: BackendConfig,
                   overrides: Overrides, envs: EnvIndex) -> TlsDetection:
    """What the pod says, then the annotations: ``tls: "false"`` wins; ``tls: "true"`` or a
    ``tls-secret`` turns TLS on; ``tls-secret`` replaces the detected certificate Secret."""
    if overrides.tls is False or backend.tls is None:
        return TlsDetection()
    tls = detect_tls(spec, main, backend, envs)
    if not tls.enabled and (overrides.tls or overrides.tls_secret):
        tls.reason = f"annotation {ANNOTATION_TLS if overrides.tls else ANNOTATION_TLS_SECRET}"
        # Redis requires client certificates unless told otherwise (tls-auth-clients defaults to yes).
        tls.client_certs = backend.tls.cert_file_env is not None
    if overrides.tls_secret is not None:
        tls.ca = SecretFile(overrides.tls_secret, CA_FILE)
        tls.cert = SecretFile(overrides.tls_secret, CERT_FILE)
        tls.key = SecretFile(overrides.tls_secret, KEY_FILE)
    return tls


def _tls_settings(tls: TlsDetection, spec: dict[str, Any], backend: BackendConfig, overrides: Overrides,
                  env: list[dict[str, Any]], warnings: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """TLS env for the sidecar, plus the datastore's CA (and client certificate) mounted into the sidecar only.

    The files come from the Secrets the datastore itself mounts, key by key, into one projected
    volume: the sidecar sees ca.crt (tls.crt, tls.key) whatever the Secret calls them. Each source is
    ``optional``: a wrong key guess leaves a file missing (the sidecar then says which) instead of
    keeping the whole pod, datastore included, from starting. Verification is never turned off: with no
    CA the sidecar verifies against the system CAs, and the warning names the annotation to set.
    """
    settings = backend.tls
    if settings is None or not tls.enabled:
        return [], []
    env.append({"name": settings.enable_env, "value": settings.enable_value})
    files: list[tuple[SecretFile, str]] = []
    if tls.ca is not None:
        files.append((tls.ca, CA_FILE))
        env.append({"name": settings.ca_file_env, "value": f"{TLS_MOUNT_PATH}/{CA_FILE}"})
    else:
        # The admission layer clips a warning at 256 characters: the fix comes first.
        warnings.append(
            f"mcp-sidecar: {backend.name} serves TLS only ({tls.reason}), no CA found in the pod's Secrets: "
            f'set {ANNOTATION_TLS_SECRET}: NAME (with ca.crt) or {ANNOTATION_TLS}: "false"; until then the sidecar '
            f"verifies against the system CAs")
    if tls.client_certs and settings.cert_file_env and settings.key_file_env:
        if tls.cert is not None and tls.key is not None:
            files += [(tls.cert, CERT_FILE), (tls.key, KEY_FILE)]
            env.append({"name": settings.cert_file_env, "value": f"{TLS_MOUNT_PATH}/{CERT_FILE}"})
            env.append({"name": settings.key_file_env, "value": f"{TLS_MOUNT_PATH}/{KEY_FILE}"})
        else:
            warnings.append(
                f"mcp-sidecar: {backend.name} requires TLS client certificates and none were found in the Secrets "
                f"the pod mounts: set {ANNOTATION_TLS_SECRET}: NAME (with ca.crt, tls.crt, tls.key), or the datastore "
                f"refuses the sidecar")
    if overrides.tls_server_name is not None:
        env.append({"name": settings.server_name_env, "value": overrides.tls_server_name})
    if not files:
        return [], []
    sources: dict[str, list[dict[str, str]]] = {}
    for secret_file, path in files:
        sources.setdefault(secret_file.name, []).append({"key": secret_file.key, "path": path})
    # 0440 needs the pod's fsGroup to give the sidecar's user the group; without one, 0444 (the
    # volume is mounted into the sidecar only).
    fs_group = isinstance((spec.get("securityContext") or {}).get("fsGroup"), int)
    volume = {"name": TLS_VOLUME_NAME, "projected": {
        "defaultMode": 0o440 if fs_group else 0o444,
        "sources": [{"secret": {"name": name, "items": items, "optional": True}} for name, items in sources.items()]}}
    return [{"name": TLS_VOLUME_NAME, "mountPath": TLS_MOUNT_PATH, "readOnly": True}], [volume]


def render_sidecar(pod: dict[str, Any], backend: BackendConfig, overrides: Overrides, native: bool,
                   envs: EnvIndex | None = None) -> Rendered:
    spec = pod.get("spec") or {}
    warnings: list[str] = []
    main = find_main_container(spec, backend)
    envs = envs or EnvIndex()  # each container's env map is built once for all the detections below
    port = overrides.port or backend.port
    backend_port = overrides.backend_port or detect_backend_port(main, backend)

    env: list[dict[str, Any]] = [
        {"name": backend.host_env, "value": "localhost"},
        {"name": backend.port_env, "value": str(backend_port)},
        {"name": "MCP_PORT", "value": str(port)},
        {"name": "MCP_READ_ONLY", "value": "true" if (overrides.read_only if overrides.read_only is not None else backend.read_only) else "false"},
    ]
    password_ref: dict[str, Any] | None
    username_ref: dict[str, Any] | None = None
    tls = _tls_detection(spec, main, backend, overrides, envs)
    if tls.port is not None and overrides.backend_port is None:
        backend_port = tls.port
        env[1] = {"name": backend.port_env, "value": str(backend_port)}
    if overrides.api_key_secret is not None and backend.api_key_env:
        # An API key replaces the user name and password: no process holds a credential it does not use.
        api_key_ref = {"name": overrides.api_key_secret.name, "key": overrides.api_key_secret.key or backend.api_key_secret_key}
        env.append({"name": backend.api_key_env, "valueFrom": {"secretKeyRef": api_key_ref}})
        password_ref = None
    elif overrides.password_secret is not None:
        password_ref = {
            "name": overrides.password_secret.name,
            "key": overrides.password_secret.key or backend.password_secret_key,
        }
    else:
        found = detect_password(spec, main, backend, tls_secret_names(tls), envs)
        password_ref, username_ref = found.ref, found.username_ref
        warnings.extend(found.warnings)
    if password_ref is not None:
        if backend.username_env and username_ref is not None:
            env.append({"name": backend.username_env, "valueFrom": {"secretKeyRef": username_ref}})
        elif backend.username_env and backend.username:
            env.append({"name": backend.username_env, "value": backend.username})
        env.append({"name": backend.password_env, "valueFrom": {"secretKeyRef": password_ref}})
    tls_mounts, tls_volumes = _tls_settings(tls, spec, backend, overrides, env, warnings)
    auth_off = overrides.auth == AUTH_NONE if overrides.auth is not None else backend.auth == AUTH_NONE
    volume_mounts = [{"name": TMP_VOLUME_NAME, "mountPath": "/tmp"}]
    volumes = [{"name": TMP_VOLUME_NAME, "emptyDir": {"sizeLimit": "16Mi"}}]
    if auth_off:
        env.append({"name": AUTH_MODE_ENV, "value": AUTH_NONE})
        source = f'annotation {ANNOTATION_AUTH}: "none"' if overrides.auth is not None else "configuration sidecar.auth: none"
        warnings.append(auth_off_warning(source))
    else:
        env.append({"name": AUTH_TOKEN_FILE_ENV, "value": f"{AUTH_MOUNT_PATH}/{TOKEN_SECRET_KEY}"})
        volume_mounts.append({"name": AUTH_VOLUME_NAME, "mountPath": AUTH_MOUNT_PATH, "readOnly": True})
        volumes.append(auth_volume(overrides))
    volume_mounts += tls_mounts
    volumes += tls_volumes
    # Auth env comes only from the auth settings: a static `env: {MCP_AUTH: none}` must not turn it off unwarned.
    taken = {e["name"] for e in env} | {AUTH_MODE_ENV, AUTH_TOKEN_FILE_ENV, "MCP_AUTH_TOKEN"}
    env.extend({"name": k, "value": v} for k, v in sorted(backend.env.items()) if k not in taken)

    container: dict[str, Any] = {
        "name": SIDECAR_CONTAINER_NAME,
        "image": overrides.image or backend.image,
        "imagePullPolicy": backend.image_pull_policy,
        "ports": [{"name": SIDECAR_PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(backend, overrides, warnings),
        "securityContext": copy.deepcopy(dict(backend.security_context)),
        **({"startupProbe": copy.deepcopy(dict(backend.startup_probe))} if backend.startup_probe else {}),
        "readinessProbe": copy.deepcopy(dict(backend.readiness_probe)),
        "livenessProbe": copy.deepcopy(dict(backend.liveness_probe)),
        "volumeMounts": volume_mounts,
    }
    if native:
        container["restartPolicy"] = "Always"
    status = {
        "backend": backend.name,
        "image": container["image"],
        "hash": spec_hash(container, volumes),
        "native": native,
        "version": __version__,
    }
    return Rendered(container=container, volumes=volumes, status=status, warnings=warnings)
