"""Registering tools with annotations, read-only gating, metrics, audit and error mapping.

Each backend's tools.py declares its tools with ``@registry.read(title)`` or ``@registry.write(...)``.
Write tools are simply not registered when ``MCP_READ_ONLY`` is true, so clients never see them. A
backend with a per-call policy (Redis: one deadline, one retry for reads) gives it as
``backend.bounded(fn, write=...)``; it wraps every tool, inside the metrics and audit.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from . import audit
from .backend import Backend, Health
from .metrics import Metrics

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


class ToolRegistry:
    def __init__(self, server: MCPServer, *, backend: Backend, health: Health, metrics: Metrics, read_only: bool):
        self.server = server
        self.backend = backend
        self.health = health
        self.metrics = metrics
        self.read_only = read_only
        self.names: list[str] = []

    def read(self, title: str | None = None) -> Callable[[Callable], Callable]:
        """A tool that only reads: always listed."""
        return self._register(READ_ONLY, title, write=False)

    def write(self, *, destructive: bool, idempotent: bool, title: str | None = None) -> Callable[[Callable], Callable]:
        """A tool that changes data: listed only when ``MCP_READ_ONLY=false``."""
        annotations = ToolAnnotations(
            read_only_hint=False, destructive_hint=destructive, idempotent_hint=idempotent, open_world_hint=False
        )
        if self.read_only:
            return lambda fn: fn
        return self._register(annotations, title, write=True)

    def _register(self, annotations: ToolAnnotations, title: str | None, *, write: bool
                  ) -> Callable[[Callable], Callable]:
        bounded = getattr(self.backend, "bounded", None)

        def decorator(fn: Callable) -> Callable:
            name = fn.__name__
            call = bounded(fn, write=write) if bounded else fn
            self.server.add_tool(self._instrument(name, call), name=name, title=title, annotations=annotations,
                                 structured_output=True)
            self.names.append(name)
            return fn

        return decorator

    def _instrument(self, name: str, fn: Callable) -> Callable:
        metrics, health, backend = self.metrics, self.health, self.backend
        calls_ok = metrics.tool_calls.labels(name, "ok")
        latency = metrics.tool_latency.labels(name)

        @functools.wraps(fn)
        async def call(**kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = await fn(**kwargs)
            except ToolError as exc:
                _finish(name, start, "error", kwargs, str(exc))
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes an MCP error result
                message, kind = backend.describe_error(exc)
                outcome = "error"
                if kind is not None:
                    outcome = "backend_error"
                    metrics.backend_errors.labels(backend.name, kind).inc()
                    health.record_error(message)
                _finish(name, start, outcome, kwargs, message)
                raise ToolError(message) from exc
            elapsed = time.perf_counter() - start
            calls_ok.inc()
            latency.observe(elapsed)
            audit.tool_call(name, elapsed, "ok", list(kwargs))
            return result

        def _finish(tool: str, start: float, outcome: str, kwargs: dict, error: str) -> None:
            elapsed = time.perf_counter() - start
            metrics.tool_calls.labels(tool, outcome).inc()
            latency.observe(elapsed)
            audit.tool_call(tool, elapsed, outcome, list(kwargs), error)

        return call


def fail(message: str) -> ToolError:
    """A user-facing tool error (bad input, missing module): ``raise fail("...")``."""
    return ToolError(message)
