"""Render the sidecar for one pod: detect what the pod already tells us, then build raw JSON.

Detection (which container is the datastore, which port it listens on, which Secret holds its
password) reads only the pod dict. Everything produced here is plain JSON-able data; no typed
Kubernetes models, so no field is ever dropped on the way.
"""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from webhook import __version__
from webhook.config import BackendConfig
from webhook.constants import (
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
from webhook.overrides import Overrides, quantity_value

AUTH_TOKEN_FILE_ENV = "MCP_AUTH_TOKEN_FILE"
AUTH_MODE_ENV = "MCP_AUTH"
#: Every volume the injector may add (stripped again by ``pod_audit.without_injection``).
INJECTED_VOLUMES = (TMP_VOLUME_NAME, AUTH_VOLUME_NAME)


@dataclass
class Rendered:
    container: dict[str, Any]
    #: The /tmp emptyDir, then (auth on) the token Secret volume.
    volumes: list[dict[str, Any]]
    status: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _image_repository(image: str) -> str:
    """``docker.io/bitnami/redis:7.2@sha256:...`` -> ``bitnami/redis`` (last path parts, no tag)."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    return name


def find_main_container(spec: dict[str, Any], backend: BackendConfig) -> dict[str, Any] | None:
    """The datastore container, by the strongest evidence first.

    A port named like the backend's (``redis``, ``http``...) beats a container name mentioning the
    backend, which beats an image mentioning it (``redis_exporter`` images mention redis too);
    with no evidence, the first container.
    """
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]

    def mentions(text: str) -> bool:
        return any(hint in text.lower() for hint in backend.main_container_hints)

    tests = (
        lambda c: any(isinstance(p, dict) and p.get("name") in backend.backend_port_names for p in c.get("ports") or []),
        lambda c: mentions(str(c.get("name", ""))),
        lambda c: mentions(_image_repository(str(c.get("image", "")))),
    )
    for test in tests:
        for container in containers:
            if test(container):
                return container
    return containers[0] if containers else None


def detect_backend_port(main: dict[str, Any] | None, backend: BackendConfig) -> int:
    """Port of the datastore: a port with a well-known name, the default if declared, a lone port, else the default."""
    ports = [p for p in (main or {}).get("ports") or [] if isinstance(p, dict) and isinstance(p.get("containerPort"), int)]
    for port in ports:
        if port.get("name") in backend.backend_port_names:
            return port["containerPort"]
    if any(p["containerPort"] == backend.backend_port for p in ports):
        return backend.backend_port
    if len(ports) == 1:
        return ports[0]["containerPort"]
    return backend.backend_port


def _secret_file_ref(container: dict[str, Any], path: str, volumes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Map a ``*_FILE`` path back to the Secret volume it is mounted from (Bitnami ``usePasswordFiles``)."""
    for mount in container.get("volumeMounts") or []:
        mount_path = str(mount.get("mountPath", "")).rstrip("/")
        if not mount_path or not path.startswith(mount_path + "/"):
            continue
        relative = path[len(mount_path) + 1 :]
        if mount.get("subPath"):
            continue
        volume = next((v for v in volumes if v.get("name") == mount.get("name")), None)
        secret = (volume or {}).get("secret")
        if not isinstance(secret, dict) or not secret.get("secretName"):
            return None
        key = posixpath.normpath(relative)
        for item in secret.get("items") or []:
            if item.get("path") == key:
                key = item.get("key", key)
                break
        return {"name": secret["secretName"], "key": key}
    return None


def detect_password_ref(spec: dict[str, Any], main: dict[str, Any] | None, backend: BackendConfig) -> tuple[dict[str, Any] | None, str | None]:
    """Find the ``secretKeyRef`` the datastore already reads its password from.

    Returns (secretKeyRef or None, warning or None). A literal password is never copied: the
    sidecar then runs without one and the warning says how to fix it.
    """
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    ordered = ([main] if main is not None else []) + [c for c in containers if c is not main]
    volumes = [v for v in spec.get("volumes") or [] if isinstance(v, dict)]
    literal_in = None
    for container in ordered:
        env = {e.get("name"): e for e in container.get("env") or [] if isinstance(e, dict)}
        for name in backend.password_source_env:
            entry = env.get(name)
            if entry is not None:
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if isinstance(ref, dict) and ref.get("name") and ref.get("key"):
                    return copy.deepcopy(ref), None
                if "value" in entry and literal_in is None:
                    literal_in = f"{container.get('name')}.env.{name}"
            file_entry = env.get(f"{name}_FILE")
            if file_entry is not None and isinstance(file_entry.get("value"), str):
                ref = _secret_file_ref(container, file_entry["value"], volumes)
                if ref is not None:
                    return ref, None
    if literal_in:
        return None, (
            f"{literal_in} is a literal value and is not copied into the sidecar; the sidecar has no "
            f"{backend.password_env}. Move the password into a Secret or set mcp-sidecar.dox/password-secret"
        )
    return None, None


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


def render_sidecar(pod: dict[str, Any], backend: BackendConfig, overrides: Overrides, native: bool) -> Rendered:
    spec = pod.get("spec") or {}
    warnings: list[str] = []
    main = find_main_container(spec, backend)
    port = overrides.port or backend.port
    backend_port = overrides.backend_port or detect_backend_port(main, backend)

    env: list[dict[str, Any]] = [
        {"name": backend.host_env, "value": "localhost"},
        {"name": backend.port_env, "value": str(backend_port)},
        {"name": "MCP_PORT", "value": str(port)},
        {"name": "MCP_READ_ONLY", "value": "true" if (overrides.read_only if overrides.read_only is not None else backend.read_only) else "false"},
    ]
    password_ref: dict[str, Any] | None
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
        password_ref, warning = detect_password_ref(spec, main, backend)
        if warning:
            warnings.append(warning)
    if password_ref is not None:
        if backend.username_env and backend.username:
            env.append({"name": backend.username_env, "value": backend.username})
        env.append({"name": backend.password_env, "valueFrom": {"secretKeyRef": password_ref}})
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
