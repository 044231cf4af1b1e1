"""Sidecar configuration: the YAML file (a ConfigMap in the chart) parsed into immutable typed objects.

The types below are the schema: pydantic validates each part of the file against them, and
``sidecar_config_schema()`` turns them into the JSON schema the Helm chart uses for its
``sidecarConfig`` value, so the chart and the server refuse the same files.

Parsing is pure: text in, ``InjectorConfig`` or ``ConfigError`` out. Reloading from disk lives in
``webhook.shared.config_store`` so the engine never touches files. The objects are built once per
configuration (pydantic dataclasses: plain attribute reads for the engine, no model per pod).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import json
import re
from importlib import resources
from typing import Annotated, Any, Literal, Mapping, Optional

import yaml
from pydantic import (AfterValidator, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr,
                      StringConstraints, TypeAdapter, ValidationError, WrapValidator)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema, WithJsonSchema
from pydantic_core import PydanticCustomError

#: Probes are replaced whole, never merged: merging a user's tcpSocket probe into a default httpGet
#: probe would give a probe with two handlers, and the API server would reject every injected pod.
PROBE_KEYS = ("startupProbe", "readinessProbe", "livenessProbe")
PROBE_HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")
#: Longest piece of a configured value quoted in an error (errors reach logs and /readyz).
_MAX_QUOTED = 64


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the offending key path."""


# --- value types: each carries its own check, error wording and JSON schema ------------------------

def _port_number(value: int) -> int:
    if not 1 <= value <= 65535:
        raise PydanticCustomError("port", "must be a port number 1-65535, got {value}", {"value": value})
    return value


def _one_handler(probe: dict[str, Any]) -> dict[str, Any]:
    handlers = [h for h in PROBE_HANDLERS if h in probe]
    if len(handlers) != 1:
        raise PydanticCustomError("probe", "needs exactly one of {expected}, got {got}",
                                  {"expected": ", ".join(PROBE_HANDLERS), "got": ", ".join(handlers) or "none"})
    return probe


def _empty_is_none(value: Any) -> Any:
    # `startupProbe: {}` is what Helm leaves of a nulled-out map: no startup probe.
    return None if value == {} else value


QUANTITY_PATTERN = r"^[0-9.]+[a-zA-Z]*$"
_QUANTITY_SCHEMA = {"anyOf": [{"type": "string", "pattern": QUANTITY_PATTERN}, {"type": "number"}]}


def _quantity(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or \
            isinstance(value, str) and not re.match(QUANTITY_PATTERN, value):
        raise PydanticCustomError("quantity", "must be a quantity such as 100m, 64Mi or 1, got {value}",
                                  {"value": _quoted(value)})
    return value


def _image_repository(entry: str) -> str:
    stripped = entry.rstrip("/")
    if not entry.strip() or "@" in entry or " " in entry or ("/" in stripped and ":" in stripped.rsplit("/", 1)[-1]):
        raise PydanticCustomError(
            "repository", "must be an image repository without tag or digest (e.g. registry.example.com/mcp/), got {value}",
            {"value": _quoted(entry)})
    return entry


def _keep_key_order(value: Any, handler: Any) -> Any:
    # Validate as the typed map, but keep the user's key order: it shows in the injected container.
    validated = handler(value)
    return {key: validated[key] for key in value if key in validated}


NonEmptyStr = Annotated[StrictStr, StringConstraints(min_length=1)]
Names = tuple[NonEmptyStr, ...]
Port = Annotated[StrictInt, AfterValidator(_port_number), WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 65535})]
Probe = Annotated[dict[str, Any], AfterValidator(_one_handler),
                  WithJsonSchema({"type": "object", "description": f"A Kubernetes probe with exactly one of {', '.join(PROBE_HANDLERS)}."})]
Quantity = Annotated[Any, AfterValidator(_quantity), WithJsonSchema(_QUANTITY_SCHEMA)]
Resources = Annotated[dict[Literal["requests", "limits"], dict[str, Quantity]], WrapValidator(_keep_key_order), WithJsonSchema({
    "type": "object", "additionalProperties": False,
    "properties": {section: {"type": "object", "additionalProperties": _QUANTITY_SCHEMA} for section in ("requests", "limits")}})]
NativeSidecar = Annotated[Literal["auto", "true", "false"],
                          BeforeValidator(lambda v: {True: "true", False: "false"}.get(v, v) if isinstance(v, bool) else v),
                          WithJsonSchema({"enum": ["auto", "true", "false", True, False]})]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]

#: Unknown keys are refused, never ignored: a typo would leave a default in force unnoticed.
_NO_UNKNOWN_KEYS = ConfigDict(extra="forbid")


# --- the configuration objects -----------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, config=_NO_UNKNOWN_KEYS)
class TlsConfig:
    """TLS-only datastore detection (redis or elasticsearch rules) and the env names the sidecar
    reads; null: no TLS detection."""

    #: Detection rules to apply: ``redis`` or ``elasticsearch`` (OpenSearch speaks like Elasticsearch).
    detect: Literal["redis", "elasticsearch"]
    #: Env set to ``enable_value`` when TLS is on (REDIS_TLS=true, ES_SCHEME=https).
    enable_env: NonEmptyStr = Field(alias="enableEnv")
    enable_value: NonEmptyStr = Field(alias="enableValue")
    ca_file_env: NonEmptyStr = Field(alias="caFileEnv")
    #: Client certificate and key (Redis ``tls-auth-clients``); None: the backend never sends one.
    cert_file_env: Optional[NonEmptyStr] = Field(default=None, alias="certFileEnv")
    key_file_env: Optional[NonEmptyStr] = Field(default=None, alias="keyFileEnv")
    server_name_env: NonEmptyStr = Field(alias="serverNameEnv")


@dataclass(frozen=True, kw_only=True, config=_NO_UNKNOWN_KEYS)
class SharedConfig:
    """The `sidecar` section: settings every backend inherits; a backend entry may override any of them."""

    image_pull_policy: PullPolicy = Field(alias="imagePullPolicy")
    port: Port
    read_only: StrictBool = Field(alias="readOnly")
    #: ``token`` (bearer token from the mcp-sidecar-token Secret) or ``none`` (explicit, warned opt-out).
    #: YAML reads ``auth: off`` as false: refused like any typo, never taken as "no auth".
    auth: Literal["token", "none"] = Field(default="token", description=(
        "token: MCP calls need the bearer token of the Secret mcp-sidecar-token; none: explicit opt-out "
        "(warned on every admission)."))
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Static env added to every sidecar (quote numbers).")
    resources: Resources
    security_context: dict[str, Any] = Field(alias="securityContext")
    # A startupProbe lets readiness/liveness drop their initial delays without ever restarting a
    # slow starter; `{}` or null: none.
    startup_probe: Annotated[Optional[Probe], BeforeValidator(_empty_is_none)] = Field(default=None, alias="startupProbe")
    readiness_probe: Probe = Field(alias="readinessProbe")
    liveness_probe: Probe = Field(alias="livenessProbe")


@dataclass(frozen=True, kw_only=True, config=_NO_UNKNOWN_KEYS)
class BackendConfig(SharedConfig):
    """A backend entry (the value of the mcp-sidecar.dox/backend label); any key of `sidecar` may be overridden here."""

    #: The key under ``backends`` (set by ``parse_config``, not a setting).
    name: SkipJsonSchema[str] = dataclasses.field(default="", init=False)
    image: NonEmptyStr
    backend_port: Port = Field(alias="backendPort")
    #: Env var names the sidecar reads.
    host_env: NonEmptyStr = Field(alias="hostEnv")
    port_env: NonEmptyStr = Field(alias="portEnv")
    password_env: NonEmptyStr = Field(alias="passwordEnv")
    #: Env vars of the datastore whose secretKeyRef the sidecar reuses (first match wins).
    password_source_env: Names = Field(default=(), alias="passwordSourceEnv")
    password_secret_key: NonEmptyStr = Field(alias="passwordSecretKey")
    username_env: Optional[StrictStr] = Field(default=None, alias="usernameEnv")
    username: Optional[StrictStr] = None
    #: Env vars of the datastore whose secretKeyRef holds the user name (ELASTIC_USERNAME).
    username_source_env: Names = Field(default=(), alias="usernameSourceEnv")
    #: Env var of an API-key credential (Elasticsearch: ES_API_KEY) and the Secret key read by default;
    #: None: the backend has no API-key override.
    api_key_env: Optional[NonEmptyStr] = Field(default=None, alias="apiKeyEnv")
    api_key_secret_key: NonEmptyStr = Field(default="api-key", alias="apiKeySecretKey")
    #: Names of the datastore container's port, used to detect a non-default backend port.
    backend_port_names: Names = Field(default=(), alias="backendPortNames")
    #: Container names/images that identify the datastore container in the pod.
    main_container_hints: Names = Field(default=(), alias="mainContainerHints")
    tls: Optional[TlsConfig] = None


@dataclass(frozen=True, kw_only=True, config=_NO_UNKNOWN_KEYS)
class ConfigFile:
    """The sidecar configuration file (schema of webhook/engine/defaults.yaml); keys left out keep
    their defaults, null removes a key or a backend."""

    native_sidecar: NativeSidecar = Field(default="auto", alias="nativeSidecar")
    # `sidecar` and `backends` are merged with the defaults before validation (see parse_config);
    # they are typed here for the JSON schema.
    sidecar: SharedConfig = Field(default=None)
    backends: dict[str, Optional[BackendConfig]] = Field(default_factory=dict)
    allowed_images: Optional[list[Annotated[NonEmptyStr, AfterValidator(_image_repository)]]] = Field(
        default=None, alias="allowedImages",
        description='Image repositories (prefixes) the mcp-sidecar.dox/image override may name; ["*"]: any.')


@dataclasses.dataclass(frozen=True)
class InjectorConfig:
    native_sidecar: str
    backends: Mapping[str, BackendConfig]
    #: Short hash of the effective configuration, exported as a metric label after reloads.
    digest: str = dataclasses.field(default="")
    #: Repositories the ``image`` override may name (``allowedImages``); None: each backend's own
    #: configured image repository only (see ``allowed_images_for``).
    allowed_images: tuple[str, ...] | None = None

    def allowed_images_for(self, backend: BackendConfig) -> tuple[str, ...]:
        """What an image override on a pod of ``backend`` may name."""
        return self.allowed_images if self.allowed_images is not None else (backend.image,)


# Built once at import: validators are compiled here, never per file or per pod.
_FILE = TypeAdapter(ConfigFile)
_SHARED = TypeAdapter(SharedConfig)
_BACKEND = TypeAdapter(BackendConfig)


# --- errors that name the key --------------------------------------------------------------------

def _quoted(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else f"a {_kind(value)}"
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path = f"{path}.{part}" if path else str(part)
    return path


def _known_keys(adapter: TypeAdapter, loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where an unknown one was found (for a did-you-mean hint)."""
    schema = adapter.json_schema(by_alias=True)
    node = schema
    for part in loc[:-1]:
        node = node.get("properties", {}).get(part) or node.get("additionalProperties") or {}
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        for option in node.get("anyOf", []):
            if "$ref" in option:
                node = schema["$defs"][option["$ref"].rsplit("/", 1)[-1]]
    return sorted(node.get("properties", {}))


_TYPE_WORDS = {"string_type": "a string", "int_type": "an integer", "bool_type": "true or false", "dict_type": "a mapping",
               "dataclass_type": "a mapping", "list_type": "a list", "tuple_type": "a list"}


def _explain(error: Mapping[str, Any], prefix: str, adapter: TypeAdapter) -> str:
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    path = _path(prefix, loc)
    if kind == "missing":
        return f"{path} is required"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        known = _known_keys(adapter, loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"
        return f"unknown top-level key {loc[-1]} ({hint})" if not prefix and len(loc) == 1 else f"{path} is not a known key ({hint})"
    if kind in _TYPE_WORDS:
        quote = " (quote it)" if kind == "string_type" and isinstance(value, (int, float, bool)) else ""
        return f"{path} must be {_TYPE_WORDS[kind]}, got {_quoted(value)}{quote}"
    if kind == "literal_error" and loc and loc[-1] == "[key]":  # a map with a fixed set of keys (resources)
        return f"{path} is not a known key (known keys: {error['ctx']['expected'].replace(chr(39), '').replace(' or ', ', ')})"
    if kind == "literal_error":
        return f"{path} must be {error['ctx']['expected'].replace(chr(39), '')}, got {_quoted(value)}"
    if kind == "string_too_short":
        return f"{path} must not be empty"
    if kind in ("port", "probe", "quantity", "repository"):
        return f"{path} {error['msg']}"
    return f"{path}: {error['msg']}"


def _validate(adapter: TypeAdapter, doc: Any, prefix: str, *, partial: bool = False) -> Any:
    """``doc`` as the adapter's type; on errors a ``ConfigError`` naming each key path (``partial``:
    missing keys are fine, another layer supplies them)."""
    try:
        return adapter.validate_python(doc)
    except ValidationError as exc:
        errors = [e for e in exc.errors() if not (partial and e["type"] == "missing")]
        # A refused key's value is not worth a second message.
        bad_keys = {tuple(e["loc"][:-1]) for e in errors if e["loc"] and e["loc"][-1] == "[key]"}
        errors = [e for e in errors if e["loc"][-1:] == ("[key]",) or not any(tuple(e["loc"][:len(k)]) == k for k in bad_keys)]
        if not errors:
            return None
        messages = list(dict.fromkeys(_explain(e, prefix, adapter) for e in errors))
        more = f"; and {len(messages) - 3} more" if len(messages) > 3 else ""
        raise ConfigError("; ".join(messages[:3]) + more) from None


# --- layering over the defaults ------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _default_document() -> dict[str, Any]:
    """defaults.yaml, parsed once (never mutated: ``_deep_merge`` copies it)."""
    text = resources.files("webhook.engine").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: nested maps merge, except probes, which replace;
    ``null`` removes a key (as in a JSON merge patch); everything else replaces."""
    merged = copy.deepcopy(dict(base))
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


def _backend(name: str, doc: dict[str, Any]) -> BackendConfig:
    backend = _validate(_BACKEND, doc, f"backends.{name}")
    object.__setattr__(backend, "name", name)  # frozen: set once, before anyone sees it
    return backend


def parse_config(text: str | None) -> InjectorConfig:
    """Parse a configuration document layered over the built-in defaults.

    An empty document yields the defaults. A backend entry set to ``null`` removes that backend.
    Each part is checked where the user wrote it: top-level keys, then the ``sidecar`` section,
    then every backend as it comes out of the merge (its own keys over ``sidecar``).
    """
    try:
        user_doc = yaml.safe_load(text) if text else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    if user_doc is None:
        user_doc = {}
    if not isinstance(user_doc, Mapping):
        raise ConfigError(f"the configuration must be a YAML mapping, got {_kind(user_doc)}")

    doc = _deep_merge(_default_document(), {k: v for k, v in user_doc.items() if k != "backends"})
    top = _validate(_FILE, {k: v for k, v in doc.items() if k not in ("sidecar", "backends")}, "")
    # Keys a backend provides itself may be left out of `sidecar` (nulled): only present ones are checked.
    _validate(_SHARED, doc.get("sidecar"), "sidecar", partial=True)

    backend_docs = dict(doc["backends"])
    user_backends = user_doc.get("backends", {}) or {}
    if not isinstance(user_backends, Mapping):
        raise ConfigError(f"backends must be a mapping of backend name to settings, got {_kind(user_backends)}")
    for name, override in user_backends.items():
        if override is None:
            backend_docs.pop(name, None)
        elif not isinstance(override, Mapping):
            raise ConfigError(f"backends.{name} must be a mapping, got {_kind(override)}")
        else:
            backend_docs[name] = _deep_merge(backend_docs.get(name, {}), override)

    backends = {name: _backend(name, _deep_merge(doc["sidecar"], bdoc)) for name, bdoc in backend_docs.items()}
    allowed_images = tuple(top.allowed_images) if top.allowed_images is not None else None
    canonical = json.dumps({"native": top.native_sidecar, "backends": sorted(backend_docs.items()),
                            **({"allowedImages": allowed_images} if allowed_images is not None else {})},
                           sort_keys=True, default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return InjectorConfig(native_sidecar=top.native_sidecar, backends=backends, digest=digest, allowed_images=allowed_images)


def default_config() -> InjectorConfig:
    return parse_config(None)


# --- the JSON schema for the chart ---------------------------------------------------------------

def sidecar_config_schema() -> dict[str, Any]:
    """The JSON schema (draft-07, self-contained) of what a user may write in the file, which is
    what the chart's ``sidecarConfig`` value holds.

    Nothing is required: every key falls back to the defaults (the chart's values.yaml spells them
    out, and a new backend inherits the ``sidecar`` section); the completed file is checked by
    ``parse_config`` when the server loads it.
    """
    schema = _FILE.json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})
    # Properties in declaration order (pydantic moves some), shared keys before a backend's own.
    order = [field.alias or name for cls in (ConfigFile, BackendConfig, TlsConfig)
             for name, field in cls.__pydantic_fields__.items()]

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return clean({**definitions[node["$ref"].rsplit("/", 1)[-1]],
                          **{k: v for k, v in node.items() if k != "$ref"}})
        out = {k: clean(v) for k, v in node.items() if k not in ("title", "default", "required")
               and (k, v) != ("additionalProperties", True)}
        if isinstance(out.get("description"), str):
            out["description"] = " ".join(out["description"].split())  # docstrings wrap
        if isinstance(out.get("properties"), dict):
            out["properties"] = dict(sorted(out["properties"].items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
        options = out.get("anyOf")
        if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
            other = next(o for o in options if o != {"type": "null"})
            if isinstance(other.get("type"), str):
                del out["anyOf"]
                out = {**other, **out, "type": [other["type"], "null"]}
                if "enum" in other:
                    out["enum"] = [*other["enum"], None]
        return dict(sorted(out.items(), key=lambda item: _KEY_ORDER.index(item[0]) if item[0] in _KEY_ORDER else len(_KEY_ORDER)))

    return clean(schema)


#: Key order inside a schema node (pydantic sorts them alphabetically): the type first, words last.
_KEY_ORDER = ("type", "additionalProperties", "enum", "minimum", "maximum", "minLength", "pattern", "items", "anyOf",
              "properties", "description")
