"""Environment-variable settings as typed models that fail fast with one line naming the bad variable.

The sidecar is configured only through env (that is what the injector sets). Each group of settings
is a pydantic model (:class:`EnvSettings`) whose fields name their variable (``env("MCP_PORT")``), so
the types, bounds and defaults are declared once and give a JSON schema (``mcp-redis --print-schema``).
``from_env`` reads those variables (a blank value counts as unset), validates, and turns the first
error into :class:`ConfigError`, whose single line names the variable; the entry point prints it and
exits 2.

Values are parsed the way the sidecars always parsed them (Python's ``int()``/``float()``, the
true/false words below, a choice among a few words), not by pydantic's lax coercion, which would
accept more (``"t"`` as true, ``"1.0"`` as 1).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Iterable, Literal, Mapping

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(Exception):
    """A missing or malformed setting; the message is a single line that names it."""


class Env:
    """An env mapping (``os.environ`` by default, a dict in tests) where blank means unset."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        self._env = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return None if value is None or value.strip() == "" else value.strip()


# ---------------------------------------------------------------------------------- value parsers
# Each raises ValueError with the text after the variable's name; from_env prefixes the name.

def _int(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"must be an integer, got {value!r}") from None


def _float(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"must be a number, got {value!r}") from None
    if math.isnan(number):  # passes no comparison, so no bound would catch it
        raise ValueError(f"must be a number, got {value!r}")
    return number


def _bool(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _readable_file(path: str | None) -> str | None:
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"points to {path!r}, which is not a readable file")
    return path


def _origins(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())


def choice(words: Iterable[str], *, upper: bool = False, said: str | None = None, cut: int | None = None):
    """A validator for one of a few words, compared case-insensitively (``said``: how the message lists them)."""
    words = tuple(words)
    said = said or f"{', '.join(words[:-1])} or {words[-1]}"

    def check(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.upper() if upper else value.lower()
        if value not in words:
            shown = value[:cut] if cut else value
            raise ValueError(f"must be {said}, got {shown!r}")
        return value

    return BeforeValidator(check)


# ---------------------------------------------------------------------------------- field types
Bool = Annotated[bool, BeforeValidator(_bool)]


def IntBetween(low: int, high: int) -> Any:
    """An integer setting with inclusive bounds (shown in the schema as minimum/maximum)."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_int)]


Port = IntBetween(1, 65535)
#: A path that must name an existing file when set (a mounted Secret's key).
FilePath = Annotated[str | None, AfterValidator(_readable_file)]


def env(name: str, default: Any = ..., description: str | None = None, **kwargs: Any) -> Any:
    """A field read from the env variable ``name`` (no default: required)."""
    return Field(default, validation_alias=name, title=name, description=description, **kwargs)


class EnvSettings(BaseModel):
    """A group of settings read from env variables (each field's ``validation_alias``)."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True)

    @classmethod
    def from_env(cls, environ: Env | Mapping[str, str] | None = None) -> "EnvSettings":
        source = environ if isinstance(environ, Env) else Env(environ)
        data = {}
        for field in cls.model_fields.values():
            value = source.raw(field.validation_alias)
            if value is not None:
                data[field.validation_alias] = value
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(cls._describe(exc.errors()[0], data)) from None

    @classmethod
    def _describe(cls, error: dict, data: dict) -> str:
        """One line naming the variable, in the words the sidecars have always used."""
        name = str(error["loc"][0]) if error["loc"] else cls.__name__
        kind = error["type"]
        if kind == "missing":
            return f"{name} is required but not set"
        if kind == "value_error":
            return f"{name} {error['ctx']['error']}"
        if kind in ("greater_than_equal", "less_than_equal"):
            low, high = cls._bounds(name)
            return f"{name} must be between {low} and {high}, got {int(error['input'])}"
        if kind == "greater_than":
            return f"{name} must be greater than {float(error['ctx']['gt'])}, got {data.get(name)}"
        return f"{name}: {error['msg']}"

    @classmethod
    def _bounds(cls, name: str) -> tuple[Any, Any]:
        field = next(f for f in cls.model_fields.values() if f.validation_alias == name)
        low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
        high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
        return low, high

    def warnings(self) -> list[tuple[str, str]]:
        """(setting, why it loosens a default): printed at start, whatever MCP_LOG_LEVEL says."""
        return []


@dataclass(frozen=True)
class Limits:
    """Caps that keep one answer small enough for a 128Mi container (see capping.py)."""

    max_items: int = 100
    max_value_bytes: int = 64 * 1024
    max_result_bytes: int = 1024 * 1024


class ServerSettings(EnvSettings):
    """Settings of the MCP HTTP front, identical for every backend."""

    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], choice(
        ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True)] = env("MCP_LOG_LEVEL", "INFO")
    #: ``token`` (default: bearer token required, fail closed without one) or ``none`` (explicit opt-out).
    #: Anything else refuses to start: a typo must never mean "no auth".
    auth_mode: Annotated[Literal["token", "none"], choice(("token", "none"), cut=40)] = env(
        "MCP_AUTH", "token", "token: a bearer token is required (fail closed without one); none: no auth")
    host: str = env("MCP_HOST", "0.0.0.0")
    port: Port = env("MCP_PORT", 9000)
    read_only: Bool = env("MCP_READ_ONLY", True, "write tools are offered only when false")
    #: A blank value counts as unset: with auth on that is the fail-closed state, never "auth off".
    auth_token: str | None = env("MCP_AUTH_TOKEN", None, repr=False)
    #: A file holding the token (the mounted Secret), re-read when it changes; wins over ``auth_token``.
    auth_token_file: str | None = env("MCP_AUTH_TOKEN_FILE", None)
    allowed_origins: Annotated[tuple[str, ...], BeforeValidator(_origins)] = env(
        "MCP_ALLOWED_ORIGINS", (), "comma-separated browser origins allowed to call /mcp")
    backend_timeout: Annotated[float, Field(gt=0), BeforeValidator(_float)] = env("MCP_BACKEND_TIMEOUT", 5.0)
    fast_path: Bool = env("MCP_FAST_PATH", True)
    max_items: IntBetween(1, 10_000) = env("MCP_MAX_ITEMS", 100, "items per answer")
    max_value_bytes: IntBetween(16, 8 * 1024 * 1024) = env("MCP_MAX_VALUE_BYTES", 64 * 1024,
                                                           "bytes of one value/string before it is cut")
    max_result_bytes: IntBetween(1024, 16 * 1024 * 1024) = env("MCP_MAX_RESULT_BYTES", 1024 * 1024,
                                                               "bytes of one answer")

    @cached_property
    def limits(self) -> Limits:
        return Limits(self.max_items, self.max_value_bytes, self.max_result_bytes)
