"""Pieces shared by both sidecars: configuration, HTTP app, security, metrics, audit, capping."""
