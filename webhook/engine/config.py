"""Sidecar configuration: the YAML file (a ConfigMap in the chart) parsed into immutable objects.

Parsing is pure: text in, ``InjectorConfig`` or ``ConfigError`` out. Reloading from disk lives in
``webhook.shared.config_store`` so the engine never touches files.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

import yaml

NATIVE_MODES = ("auto", "true", "false")


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the offending key."""


@dataclass(frozen=True)
class TlsConfig:
    """How a backend detects a TLS-only datastore and the env the sidecar reads to speak TLS."""

    #: Detection rules to apply: ``redis`` or ``elasticsearch`` (OpenSearch speaks like Elasticsearch).
    detect: str
    #: Env set to ``enable_value`` when TLS is on (REDIS_TLS=true, ES_SCHEME=https).
    enable_env: str
    enable_value: str
    ca_file_env: str
    server_name_env: str
    #: Client certificate and key (Redis ``tls-auth-clients``); None: the backend never sends one.
    cert_file_env: str | None = None
    key_file_env: str | None = None


TLS_DETECTORS = ("redis", "elasticsearch")


@dataclass(frozen=True)
class BackendConfig:
    name: str
    image: str
    image_pull_policy: str
    port: int
    backend_port: int
    read_only: bool
    host_env: str
    port_env: str
    password_env: str
    password_source_env: tuple[str, ...]
    password_secret_key: str
    backend_port_names: tuple[str, ...]
    main_container_hints: tuple[str, ...]
    username_env: str | None
    username: str | None
    env: Mapping[str, str]
    resources: Mapping[str, Any]
    security_context: Mapping[str, Any]
    readiness_probe: Mapping[str, Any]
    liveness_probe: Mapping[str, Any]
    # Optional: a startupProbe lets readiness/liveness drop their initial delays without ever
    # restarting a slow starter (absent in the seed defaults, so nothing changes unless configured).
    startup_probe: Mapping[str, Any] | None = None
    #: ``token`` (bearer token from the mcp-sidecar-token Secret) or ``none`` (explicit, warned opt-out).
    auth: str = "token"
    #: Env var of an API-key credential (Elasticsearch: ES_API_KEY) and the Secret key read by default;
    #: None: the backend has no API-key override.
    api_key_env: str | None = None
    api_key_secret_key: str = "api-key"
    #: Env vars of the datastore whose secretKeyRef holds the user name (ELASTIC_USERNAME).
    username_source_env: tuple[str, ...] = ()
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class InjectorConfig:
    native_sidecar: str
    backends: Mapping[str, BackendConfig]
    #: Short hash of the effective configuration, exported as a metric label after reloads.
    digest: str = field(default="")
    #: Repositories the ``image`` override may name (``allowedImages``); None: each backend's own
    #: configured image repository only (see ``allowed_images_for``).
    allowed_images: tuple[str, ...] | None = None

    def allowed_images_for(self, backend: BackendConfig) -> tuple[str, ...]:
        """What an image override on a pod of ``backend`` may name."""
        return self.allowed_images if self.allowed_images is not None else (backend.image,)


def _default_document() -> dict[str, Any]:
    text = resources.files("webhook.engine").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


#: Probes are replaced whole, never merged: merging a user's tcpSocket probe into a default httpGet
#: probe would give a probe with two handlers, and the API server would reject every injected pod.
PROBE_KEYS = ("startupProbe", "readinessProbe", "livenessProbe")
PROBE_HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: nested maps merge, except probes, which replace;
    ``null`` removes a key (as in a JSON merge patch); everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif key in PROBE_KEYS:
            merged[key] = copy.deepcopy(value)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _require(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise ConfigError(f"{where}.{key} is required")
    value = doc[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}.{key} must be a {expected}, got {type(value).__name__}: {value!r}")
    return value


def _port(doc: Mapping[str, Any], key: str, where: str) -> int:
    value = _require(doc, key, int, where)
    if not 1 <= value <= 65535:
        raise ConfigError(f"{where}.{key} must be a port number 1-65535, got {value}")
    return value


def _names(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}.{key} must be a list of non-empty strings")
    return tuple(value)


def _tls(doc: Any, where: str) -> TlsConfig | None:
    """``tls``: detection rules and the sidecar's TLS env names; absent or null: no TLS detection."""
    if doc is None:
        return None
    where = f"{where}.tls"
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where} must be a mapping (or null)")
    detect = doc.get("detect")
    if detect not in TLS_DETECTORS:
        raise ConfigError(f"{where}.detect must be one of {', '.join(TLS_DETECTORS)}, got {detect!r}")
    optional = {}
    for key in ("certFileEnv", "keyFileEnv"):
        value = doc.get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise ConfigError(f"{where}.{key} must be a non-empty string")
        optional[key] = value
    return TlsConfig(
        detect=detect,
        enable_env=_require(doc, "enableEnv", str, where),
        enable_value=_require(doc, "enableValue", str, where),
        ca_file_env=_require(doc, "caFileEnv", str, where),
        server_name_env=_require(doc, "serverNameEnv", str, where),
        cert_file_env=optional["certFileEnv"],
        key_file_env=optional["keyFileEnv"],
    )


def _backend(name: str, doc: Any) -> BackendConfig:
    where = f"backends.{name}"
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    env = doc.get("env", {}) or {}
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError(f"{where}.env must map names to string values (quote numbers)")
    pull = _require(doc, "imagePullPolicy", str, where)
    if pull not in ("Always", "IfNotPresent", "Never"):
        raise ConfigError(f"{where}.imagePullPolicy must be Always, IfNotPresent or Never, got {pull!r}")
    maps = {}
    for key in ("resources", "securityContext", "readinessProbe", "livenessProbe"):
        maps[key] = _require(doc, key, dict, where)
    for key in PROBE_KEYS:
        probe = doc.get(key)
        if not isinstance(probe, Mapping) or (key == "startupProbe" and not probe):
            continue  # absent, `startupProbe: {}` (none: what Helm leaves of a nulled map), or refused below
        handlers = [h for h in PROBE_HANDLERS if h in probe]
        if len(handlers) != 1:
            raise ConfigError(f"{where}.{key} needs exactly one of {', '.join(PROBE_HANDLERS)}, got "
                              f"{', '.join(handlers) or 'none'}")
    startup_probe = doc.get("startupProbe")
    if startup_probe is not None and not isinstance(startup_probe, Mapping):
        raise ConfigError(f"{where}.startupProbe must be a mapping (or null), got {type(startup_probe).__name__}")
    auth = doc.get("auth", "token")
    if auth not in ("token", "none"):
        # YAML reads `auth: off` as false: refused like any typo, never taken as "no auth".
        raise ConfigError(f"{where}.auth must be token or none, got {auth!r}")
    api_key_env = doc.get("apiKeyEnv")
    if api_key_env is not None and not (isinstance(api_key_env, str) and api_key_env):
        raise ConfigError(f"{where}.apiKeyEnv must be a non-empty string")
    username_env = doc.get("usernameEnv")
    username = doc.get("username")
    return BackendConfig(
        name=name,
        image=_require(doc, "image", str, where),
        image_pull_policy=pull,
        port=_port(doc, "port", where),
        backend_port=_port(doc, "backendPort", where),
        read_only=_require(doc, "readOnly", bool, where),
        host_env=_require(doc, "hostEnv", str, where),
        port_env=_require(doc, "portEnv", str, where),
        password_env=_require(doc, "passwordEnv", str, where),
        password_source_env=_names(doc, "passwordSourceEnv", where),
        password_secret_key=_require(doc, "passwordSecretKey", str, where),
        backend_port_names=_names(doc, "backendPortNames", where),
        main_container_hints=_names(doc, "mainContainerHints", where),
        username_env=username_env if isinstance(username_env, str) else None,
        username=username if isinstance(username, str) else None,
        env=dict(env),
        resources=maps["resources"],
        security_context=maps["securityContext"],
        readiness_probe=maps["readinessProbe"],
        liveness_probe=maps["livenessProbe"],
        startup_probe=dict(startup_probe) if startup_probe else None,
        auth=auth,
        api_key_env=api_key_env,
        api_key_secret_key=str(doc.get("apiKeySecretKey") or "api-key"),
        username_source_env=_names(doc, "usernameSourceEnv", where),
        tls=_tls(doc.get("tls"), where),
    )


def _allowed_images(value: Any) -> tuple[str, ...] | None:
    """``allowedImages``: image repositories (or repository prefixes) without tag or digest; ``*``
    alone allows any image; absent or null: each backend's own image repository."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError('allowedImages must be a list of image repositories (e.g. registry.example.com/mcp/), or ["*"]')
    for entry in value:
        stripped = entry.rstrip("/")
        if "@" in entry or " " in entry or ("/" in stripped and ":" in stripped.rsplit("/", 1)[-1]):
            raise ConfigError(f"allowedImages entry {entry!r} must be a repository without tag or digest")
    return tuple(value)


def parse_config(text: str | None) -> InjectorConfig:
    """Parse a configuration document layered over the built-in defaults.

    An empty document yields the defaults. A backend entry set to ``null`` removes that backend.
    """
    try:
        user_doc = yaml.safe_load(text) if text else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    if user_doc is None:
        user_doc = {}
    if not isinstance(user_doc, Mapping):
        raise ConfigError("the configuration must be a YAML mapping")
    unknown = set(user_doc) - {"nativeSidecar", "sidecar", "backends", "allowedImages"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")

    doc = _deep_merge(_default_document(), {k: v for k, v in user_doc.items() if k != "backends"})
    native = doc.get("nativeSidecar")
    native = {True: "true", False: "false"}.get(native, native)
    if native not in NATIVE_MODES:
        raise ConfigError(f"nativeSidecar must be one of auto, true, false; got {native!r}")
    if not isinstance(doc.get("sidecar"), Mapping):
        raise ConfigError("sidecar must be a mapping")

    backend_docs = dict(doc["backends"])
    user_backends = user_doc.get("backends", {}) or {}
    if not isinstance(user_backends, Mapping):
        raise ConfigError("backends must be a mapping of backend name to settings")
    for name, override in user_backends.items():
        if override is None:
            backend_docs.pop(name, None)
        elif not isinstance(override, Mapping):
            raise ConfigError(f"backends.{name} must be a mapping")
        else:
            backend_docs[name] = _deep_merge(backend_docs.get(name, {}), override)

    backends = {name: _backend(name, _deep_merge(doc["sidecar"], bdoc)) for name, bdoc in backend_docs.items()}
    allowed_images = _allowed_images(user_doc.get("allowedImages"))
    canonical = json.dumps({"native": native, "backends": sorted(backend_docs.items()), **({"allowedImages": allowed_images} if allowed_images is not None else {})}, sort_keys=True, default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return InjectorConfig(native_sidecar=native, backends=backends, digest=digest, allowed_images=allowed_images)


def default_config() -> InjectorConfig:
    return parse_config(None)
