"""Holds the configuration in force and reloads it when the file changes.

A ConfigMap volume updates by swapping a symlink, so we compare file contents rather than
watching inotify events. An invalid new file keeps the old configuration (log + metric).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Callable

from webhook.engine.config import ConfigError, InjectorConfig, default_config, parse_config

log = logging.getLogger("webhook.config")


class ConfigStore:
    def __init__(self, path: str | Path | None, on_reload: Callable[[str, InjectorConfig | None], None] | None = None):
        """Load ``path`` now (raising ``ConfigError`` if invalid: fail fast at start).

        ``on_reload(result, config)`` is called after each reload attempt with ``ok`` or ``error``.
        """
        self.path = Path(path) if path else None
        self._on_reload = on_reload
        self._fingerprint: str | None = None
        self.last_error: str | None = None
        if self.path is None:
            self.current: InjectorConfig = default_config()
        else:
            text = self._read()
            self.current = parse_config(text)
            self._fingerprint = hashlib.sha256(text.encode()).hexdigest()

    def _read(self) -> str:
        assert self.path is not None
        try:
            return self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from None

    def reload_if_changed(self) -> bool:
        """Re-read the file; switch to it when it changed and is valid. Returns True on a switch."""
        if self.path is None:
            return False
        try:
            text = self._read()
        except ConfigError as exc:
            return self._failed(str(exc))
        fingerprint = hashlib.sha256(text.encode()).hexdigest()
        if fingerprint == self._fingerprint:
            return False
        try:
            new = parse_config(text)
        except ConfigError as exc:
            self._fingerprint = fingerprint  # report a bad file once, not every poll
            return self._failed(str(exc))
        self._fingerprint = fingerprint
        self.current = new
        self.last_error = None
        log.info("configuration reloaded from %s (digest %s)", self.path, new.digest)
        if self._on_reload:
            self._on_reload("ok", new)
        return True

    def _failed(self, message: str) -> bool:
        if message != self.last_error:
            log.error("configuration reload failed, keeping the previous one: %s", message)
        self.last_error = message
        if self._on_reload:
            self._on_reload("error", None)
        return False

    async def watch(self, interval: float = 2.0) -> None:
        """Poll forever (cancelled by the server's lifespan on shutdown)."""
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()
