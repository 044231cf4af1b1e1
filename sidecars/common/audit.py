"""One JSON line per tool call on stdout: the audit trail an operator greps in ``kubectl logs``.

Only argument *names* are logged, never values: a value may be a password, a document or a key
that is itself sensitive.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_logger = logging.getLogger("mcp.audit")


def configure(level: str) -> None:
    """Send audit lines unformatted to stdout and keep the SDK's own loggers quiet."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    _logger.handlers[:] = [handler]
    _logger.propagate = False
    _logger.setLevel(logging.INFO)
    root = logging.getLogger()
    root.setLevel(level)
    # The SDK and httpx log every request at INFO; that costs latency and buries the audit trail.
    for noisy in ("mcp", "httpx", "httpx2", "elastic_transport", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def tool_call(tool: str, duration_s: float, outcome: str, arg_names: list[str], error: str | None = None) -> None:
    """Emit the audit line of one tool call. ``outcome`` is ok, error, backend_error or invalid."""
    record = {
        "ts": round(time.time(), 3),
        "event": "tool_call",
        "tool": tool,
        "outcome": outcome,
        "duration_ms": round(duration_s * 1000, 3),
        "args": sorted(arg_names),
    }
    if error:
        record["error"] = error[:300]
    _logger.info(json.dumps(record, separators=(",", ":")))


def event(name: str, **fields: object) -> None:
    """A structured lifecycle line (startup, backend state change)."""
    _logger.info(json.dumps({"ts": round(time.time(), 3), "event": name, **fields}, separators=(",", ":"), default=str))
