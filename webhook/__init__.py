"""mcp-sidecar-injector: mutating admission webhook, injection engine, operator and CLI."""

__version__ = "0.1.0"
