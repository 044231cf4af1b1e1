"""Per-pod override annotations: parsed and validated before anything is rendered.

Each annotation has one accepted form. An invalid value never blocks the pod: the engine leaves the
pod unchanged and the warning names the annotation and the form it accepts (vault-k8s style
"parse annotations -> validate" step).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from webhook.engine.constants import ANNOTATION_AUTH, AUTH_NONE, AUTH_TOKEN, DOMAIN

ANNOTATION_IMAGE = f"{DOMAIN}/image"
ANNOTATION_PORT = f"{DOMAIN}/port"
ANNOTATION_BACKEND_PORT = f"{DOMAIN}/backend-port"
ANNOTATION_PASSWORD_SECRET = f"{DOMAIN}/password-secret"
ANNOTATION_AUTH_SECRET = f"{DOMAIN}/auth-token-secret"
ANNOTATION_API_KEY_SECRET = f"{DOMAIN}/api-key-secret"
ANNOTATION_READ_ONLY = f"{DOMAIN}/read-only"
ANNOTATION_NATIVE = f"{DOMAIN}/native"
ANNOTATION_CPU_REQUEST = f"{DOMAIN}/cpu-request"
ANNOTATION_MEMORY_REQUEST = f"{DOMAIN}/memory-request"
ANNOTATION_CPU_LIMIT = f"{DOMAIN}/cpu-limit"
ANNOTATION_MEMORY_LIMIT = f"{DOMAIN}/memory-limit"
ANNOTATION_TLS = f"{DOMAIN}/tls"
ANNOTATION_TLS_SECRET = f"{DOMAIN}/tls-secret"
ANNOTATION_TLS_SERVER_NAME = f"{DOMAIN}/tls-server-name"

# Kubernetes resource.Quantity, e.g. 100m, 0.5, 128Mi, 1G, 1e3.
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$")
# Docker image reference: [registry[:port]/]path[:tag][@digest]; conservative, no whitespace.
_IMAGE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class InvalidOverride(ValueError):
    """One annotation has a value outside its accepted form."""

    def __init__(self, annotation: str, value: str, accepted: str):
        self.annotation = annotation
        self.value = value
        self.accepted = accepted
        shown = value if len(value) <= 100 else value[:100] + f"... ({len(value)} characters)"
        super().__init__(f"annotation {annotation}={shown!r} is invalid: expected {accepted}")


@dataclass(frozen=True)
class SecretRef:
    name: str
    #: ``None`` when the annotation named only the Secret: the backend's configured key applies.
    key: str | None


@dataclass(frozen=True)
class Overrides:
    """Validated per-pod overrides; ``None`` means "use the configured default"."""

    image: str | None = None
    port: int | None = None
    backend_port: int | None = None
    password_secret: SecretRef | None = None
    auth_secret: SecretRef | None = None
    #: ``token`` or ``none`` (the explicit, warned opt-out of bearer-token auth).
    auth: str | None = None
    #: Elasticsearch API key Secret: replaces the user name and password in the sidecar.
    api_key_secret: SecretRef | None = None
    read_only: bool | None = None
    native: bool | None = None
    cpu_request: str | None = None
    memory_request: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    #: Force TLS to the datastore on or off (None: detected from the pod).
    tls: bool | None = None
    #: Secret holding ca.crt (and tls.crt/tls.key when the datastore wants client certificates).
    tls_secret: str | None = None
    #: Name to check the datastore's certificate against (it usually names the Service, not localhost).
    tls_server_name: str | None = None


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError
    return int(value)


#: The only ports the ``port`` override may move the sidecar to. The chart's NetworkPolicy keeps
#: every port of a datastore pod open except this range, which only its `from` peers reach (through
#: the named port ``mcp``): an override outside it would land on an open port and bypass the policy.
SIDECAR_PORT_RANGE = (9000, 9199)


def _sidecar_port(value: str) -> int:
    port = _port(value)
    if not SIDECAR_PORT_RANGE[0] <= port <= SIDECAR_PORT_RANGE[1]:
        raise ValueError
    return port


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError
    return lowered == "true"


def _auth(value: str) -> str:
    if value.lower() not in (AUTH_TOKEN, AUTH_NONE):
        raise ValueError
    return value.lower()


def _quantity(value: str) -> str:
    if len(value) > 32 or not _QUANTITY.match(value):
        raise ValueError
    return value


_SUFFIX = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal("1e3"),
           "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
           "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50),
           "Ei": Decimal(2**60)}


def quantity_value(value: Any) -> Decimal | None:
    """A Kubernetes quantity as a number (``100m`` -> 0.1, ``64Mi`` -> 67108864); None if unparsable."""
    text = str(value).strip()
    match = re.match(r"^[+]?(\d+(?:\.\d*)?|\.\d+)(.*)$", text)
    if not match or len(text) > 32:
        return None
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E") and suffix[1:].lstrip("+-").isdigit():
            return Decimal(number) * (Decimal(10) ** int(suffix[1:]))
        return Decimal(number) * _SUFFIX[suffix]
    except (KeyError, InvalidOperation):
        return None


def _image(value: str) -> str:
    if len(value) > 512 or not _IMAGE.match(value):
        raise ValueError
    return value


def _qualified(name: str) -> str:
    """A repository name as a registry resolves it (``redis`` -> ``docker.io/library/redis``); a lone
    registry host (``registry.example.com``, ``localhost:5000``) is kept as it is."""
    first, sep, rest = name.partition("/")
    if not sep:
        return name if ("." in name or ":" in name or name == "localhost") else f"docker.io/library/{name}"
    if first in ("index.docker.io", "registry-1.docker.io"):
        return f"docker.io/{rest}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{name}"
    return name


def image_repository(image: str) -> str:
    """The fully qualified repository of an image reference, without tag or digest:
    ``mcp/redis:1`` -> ``docker.io/mcp/redis``."""
    name = image.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[: name.rfind(":")]
    if "/" not in name:
        return f"docker.io/library/{name}"
    return _qualified(name)


def image_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """Whether an ``image`` override names a repository in, or under, one of ``allowed`` (``*``: any).

    Entries are repositories or prefixes without tag, compared on whole path components:
    ``example.com/mcp`` admits ``example.com/mcp/redis`` but not ``example.com/mcp-evil/redis``.
    An entry that is a configured image (with a tag) stands for its repository.
    """
    repository = image_repository(image)
    for entry in allowed:
        if entry == "*":
            return True
        entry = entry.rstrip("/")
        prefix = _qualified(entry) if "/" not in entry else image_repository(entry)
        if repository == prefix or repository.startswith(prefix + "/"):
            return True
    return False


def _secret_name(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError
    return value


def _server_name(value: str) -> str:
    """A DNS name as a certificate holds it (a leading ``*.`` is not a name to connect to)."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value.lower()):
        raise ValueError
    return value.lower()


def _secret(value: str) -> SecretRef:
    name, sep, key = value.partition(":")
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name) or (sep and not _SECRET_KEY.match(key)):
        raise ValueError
    return SecretRef(name, key if sep else None)


# annotation -> (field, parser, accepted form shown to the user)
_SIMPLE: dict[str, tuple[str, Callable[[str], object], str]] = {
    ANNOTATION_IMAGE: ("image", _image, "an image reference such as registry.example.com/mcp/redis:1.2"),
    ANNOTATION_PORT: ("port", _sidecar_port, "a port number 1-65535 within the sidecar port range %d-%d" % SIDECAR_PORT_RANGE),
    ANNOTATION_BACKEND_PORT: ("backend_port", _port, "a port number 1-65535"),
    ANNOTATION_READ_ONLY: ("read_only", _bool, '"true" or "false"'),
    ANNOTATION_NATIVE: ("native", _bool, '"true" or "false"'),
    ANNOTATION_AUTH: ("auth", _auth, '"token" (the default) or "none" (no credential needed: explicit opt-out)'),
    ANNOTATION_CPU_REQUEST: ("cpu_request", _quantity, "a Kubernetes quantity such as 50m or 0.5"),
    ANNOTATION_MEMORY_REQUEST: ("memory_request", _quantity, "a Kubernetes quantity such as 64Mi"),
    ANNOTATION_CPU_LIMIT: ("cpu_limit", _quantity, "a Kubernetes quantity such as 100m or 1"),
    ANNOTATION_MEMORY_LIMIT: ("memory_limit", _quantity, "a Kubernetes quantity such as 128Mi"),
    ANNOTATION_TLS: ("tls", _bool, '"true" or "false"'),
    ANNOTATION_TLS_SECRET: ("tls_secret", _secret_name, "a Secret name holding ca.crt (and tls.crt, tls.key)"),
    ANNOTATION_TLS_SERVER_NAME: ("tls_server_name", _server_name, "a DNS name such as redis-master.prod.svc"),
}
_SECRET_FORM = "a Secret name, optionally with its key as NAME:KEY (e.g. redis:redis-password)"

#: Every override annotation the engine understands (used by the CLI's explain output and docs).
OVERRIDE_ANNOTATIONS = (*_SIMPLE, ANNOTATION_PASSWORD_SECRET, ANNOTATION_AUTH_SECRET, ANNOTATION_API_KEY_SECRET)
_SECRET_ANNOTATIONS = ((ANNOTATION_PASSWORD_SECRET, "password_secret"), (ANNOTATION_AUTH_SECRET, "auth_secret"),
                       (ANNOTATION_API_KEY_SECRET, "api_key_secret"))


def parse_overrides(annotations: Mapping[str, str]) -> Overrides:
    """Validate every override annotation present; raise ``InvalidOverride`` on the first bad one."""
    values: dict[str, object] = {}
    for annotation, (field_name, parse, accepted) in _SIMPLE.items():
        raw = annotations.get(annotation)
        if raw is None:
            continue
        try:
            values[field_name] = parse(str(raw).strip())
        except ValueError:
            raise InvalidOverride(annotation, str(raw), accepted) from None
    for annotation, field_name in _SECRET_ANNOTATIONS:
        raw = annotations.get(annotation)
        if raw is None:
            continue
        try:
            values[field_name] = _secret(str(raw).strip())
        except ValueError:
            raise InvalidOverride(annotation, str(raw), _SECRET_FORM) from None
    return Overrides(**values)  # type: ignore[arg-type]
