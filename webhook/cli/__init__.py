"""The `mcp-sidecar` command line: one entry point for every program (serve, operator) and the
operator-facing commands (audit, check-inject, inject, ls, connect, rotate-token)."""

from webhook.cli.main import main

__all__ = ["main"]
