"""Serving certificate that follows rotation: cert-manager (and the chart's hook) renew files in place.

``ssl.SSLContext.load_cert_chain`` on the live context affects every later handshake, so no
restart and no dropped connections. A half-written pair (new cert, old key) fails to load and is
retried at the next poll while the old certificate keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Callable

log = logging.getLogger("webhook.tls")


class CertReloader:
    def __init__(self, context: ssl.SSLContext, cert_file: str, key_file: str, on_reload: Callable[[str], None] | None = None):
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self._on_reload = on_reload
        self._stamp = self._current_stamp()

    def _current_stamp(self) -> tuple[float, ...] | None:
        try:
            # stat() follows the ..data symlink of a Secret volume, so a swap changes the stamp.
            return tuple(x for f in (self.cert_file, self.key_file) for x in (os.stat(f).st_mtime_ns, os.stat(f).st_ino, os.stat(f).st_size))
        except OSError:
            return None

    def reload_if_changed(self) -> bool:
        stamp = self._current_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        try:
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, OSError) as exc:
            log.error("TLS reload failed, still serving the previous certificate: %s", exc)
            if self._on_reload:
                self._on_reload("error")
            return False
        self._stamp = stamp
        log.info("TLS certificate reloaded from %s", self.cert_file)
        if self._on_reload:
            self._on_reload("ok")
        return True

    async def watch(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()
