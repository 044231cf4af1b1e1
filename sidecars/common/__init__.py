"""Pieces shared by both sidecars: configuration, HTTP app, security, metrics, audit, capping."""

#: The package version (pyproject.toml; tests/sidecars/test_wire.py keeps them equal), sent as
#: ``serverInfo.version``. A constant: the sidecar images carry the sources, not the package metadata.
__version__ = "0.1.0"

# Before anything here imports the SDK or uvicorn (lean_imports.py says why).
from .lean_imports import defer_cryptography_in, defer_package_init  # noqa: E402

defer_package_init("mcp")
defer_package_init("uvicorn")
defer_package_init("httpx2")  # the SDK's HTTP client: fetches URL resources, OAuth; none served here
defer_cryptography_in("mcp.server.request_state")
