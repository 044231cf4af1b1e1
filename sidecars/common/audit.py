"""One JSON line per tool call on stdout: the audit trail an operator greps in ``kubectl logs``.

Only argument *names* are logged, never values: a value may be a password, a document or a key
that is itself sensitive.

The lines are written to stdout directly, not through ``logging``: a LogRecord (caller lookup by
walking the stack, thread and process names, handler locks) cost more than the rest of the audit on
every call. Until :func:`configure` runs (the sidecar starting), nothing is written, as before.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_stream = None


def _write(line: str) -> None:
    if _stream is None:
        return
    try:
        _stream.write(line + "\n")
        _stream.flush()
    except (OSError, ValueError):  # stdout gone: a lost audit line must not fail the call (as logging did)
        pass


def configure(level: str) -> None:
    """Send audit lines to stdout and keep the SDK's own loggers quiet."""
    global _stream
    _stream = sys.stdout
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
    _write(json.dumps(record, separators=(",", ":")))


def event(name: str, **fields: object) -> None:
    """A structured lifecycle line (startup, backend state change)."""
    _write(json.dumps({"ts": round(time.time(), 3), "event": name, **fields}, separators=(",", ":"), default=str))
