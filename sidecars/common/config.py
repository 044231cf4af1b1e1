"""Environment-variable configuration that fails fast with one line naming the bad setting.

The sidecar is configured only through env (that is what the injector sets), so every reader here
raises :class:`ConfigError` whose message names the variable; ``__main__`` prints it and exits 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(Exception):
    """A missing or malformed setting; the message is a single line that names it."""


class Env:
    """Typed readers over an env mapping (``os.environ`` by default, a dict in tests)."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        self._env = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise ConfigError(f"{name} is required but not set")
            return default
        return value

    def int(self, name: str, default: int | None = None, *, required: bool = False,
            minimum: int | None = None, maximum: int | None = None) -> int | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise ConfigError(f"{name} is required but not set")
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {number}")
        return number

    def float(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if number <= minimum:
            raise ConfigError(f"{name} must be greater than {minimum}, got {value}")
        return number

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def file(self, name: str) -> str | None:
        path = self.raw(name)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{name} points to {path!r}, which is not a readable file")
        return path

    def port(self, name: str, default: int | None = None, *, required: bool = False) -> int | None:
        return self.int(name, default, required=required, minimum=1, maximum=65535)


@dataclass(frozen=True)
class Limits:
    """Caps that keep one answer small enough for a 128Mi container (see capping.py)."""

    max_items: int = 100
    max_value_bytes: int = 64 * 1024
    max_result_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Settings of the MCP HTTP front, identical for both backends."""

    host: str = "0.0.0.0"
    port: int = 9000
    read_only: bool = True
    #: ``token`` (default: bearer token required, fail closed without one) or ``none`` (explicit opt-out).
    auth_mode: str = "token"
    auth_token: str | None = None
    #: A file holding the token (the mounted Secret), re-read when it changes; wins over ``auth_token``.
    auth_token_file: str | None = None
    allowed_origins: tuple[str, ...] = ()
    backend_timeout: float = 5.0
    log_level: str = "INFO"
    fast_path: bool = True
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, env: Env) -> "ServerSettings":
        origins = tuple(o.strip().rstrip("/") for o in (env.str("MCP_ALLOWED_ORIGINS") or "").split(",") if o.strip())
        log_level = (env.str("MCP_LOG_LEVEL", "INFO") or "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"MCP_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
        auth_mode = (env.str("MCP_AUTH", "token") or "token").lower()
        if auth_mode not in ("token", "none"):
            # Refuse to start rather than guess: a typo must never mean "no auth".
            raise ConfigError(f"MCP_AUTH must be token or none, got {auth_mode[:40]!r}")
        return cls(
            host=env.str("MCP_HOST", "0.0.0.0") or "0.0.0.0",
            port=env.port("MCP_PORT", 9000) or 9000,
            read_only=env.bool("MCP_READ_ONLY", True),
            auth_mode=auth_mode,
            # A blank value counts as unset: with auth on that is the fail-closed state, never "auth off".
            auth_token=env.str("MCP_AUTH_TOKEN"),
            auth_token_file=env.str("MCP_AUTH_TOKEN_FILE"),
            allowed_origins=origins,
            backend_timeout=env.float("MCP_BACKEND_TIMEOUT", 5.0),
            log_level=log_level,
            fast_path=env.bool("MCP_FAST_PATH", True),
            limits=Limits(
                max_items=env.int("MCP_MAX_ITEMS", 100, minimum=1, maximum=10_000) or 100,
                max_value_bytes=env.int("MCP_MAX_VALUE_BYTES", 64 * 1024, minimum=16, maximum=8 * 1024 * 1024)
                or 64 * 1024,
                max_result_bytes=env.int("MCP_MAX_RESULT_BYTES", 1024 * 1024, minimum=1024, maximum=16 * 1024 * 1024)
                or 1024 * 1024,
            ),
        )
