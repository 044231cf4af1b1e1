"""What a sidecar needs from its backend, and the health state derived from it."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from .metrics import Metrics


class Backend(Protocol):
    name: str

    async def ping(self) -> None:
        """One cheap round trip; raises on failure."""

    def describe_error(self, exc: BaseException) -> tuple[str, str | None]:
        """(message for the client, error kind if the backend is unreachable/timing out, else None)."""

    async def close(self) -> None: ...


class Health:
    """Backend reachability as seen by ``/health`` and by tool calls.

    Tool calls feed failures in too, so ``last_error`` tells an operator why calls fail even when
    nobody polled ``/health``.
    """

    def __init__(self, backend: Backend, metrics: Metrics, timeout: float):
        self.backend = backend
        self.metrics = metrics
        self.timeout = timeout
        self.reachable: bool | None = None
        self.round_trip_ms: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def record_error(self, message: str) -> None:
        self.reachable = False
        self.last_error = message
        self.last_error_at = time.time()

    async def check(self) -> tuple[dict, int]:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(self.backend.ping(), self.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means degraded
            message, kind = self.backend.describe_error(exc)
            if isinstance(exc, asyncio.TimeoutError):
                message, kind = f"{self.backend.name} did not answer within {self.timeout:g}s", "timeout"
            self.metrics.backend_errors.labels(self.backend.name, kind or "other").inc()
            self.record_error(message)
            self.round_trip_ms = None
        else:
            self.reachable = True
            self.round_trip_ms = round((time.perf_counter() - start) * 1000, 3)
        self.metrics.backend_up.labels(self.backend.name).set(1 if self.reachable else 0)
        body = {
            "status": "ok" if self.reachable else "degraded",
            "backend": self.backend.name,
            "reachable": bool(self.reachable),
            "round_trip_ms": self.round_trip_ms,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }
        return body, 200 if self.reachable else 503
