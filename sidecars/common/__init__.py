"""Pieces shared by both sidecars: configuration, HTTP app, security, metrics, audit, capping."""

#: The package version (pyproject.toml; tests/sidecars/test_wire.py keeps them equal), sent as
#: ``serverInfo.version``. A constant: the sidecar images carry the sources, not the package metadata.
__version__ = "0.1.0"
