"""Prometheus metrics of the admission server, on a registry of its own (one per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reviews = Counter("mcp_injector_admission_reviews", "AdmissionReviews answered", ["operation", "result"], registry=r)
        self.injections = Counter("mcp_injector_injections", "Pods injected", ["backend"], registry=r)
        self.skips = Counter("mcp_injector_skips", "Labelled pods not injected", ["reason"], registry=r)
        self.errors = Counter("mcp_injector_errors", "Requests answered with an error", ["type"], registry=r)
        self.latency = Histogram(
            "mcp_injector_review_duration_seconds",
            "Time to answer one AdmissionReview (read, decide, encode)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.config_reloads = Counter("mcp_injector_config_reloads", "Configuration reload attempts", ["result"], registry=r)
        self.config_info = Gauge("mcp_injector_config_info", "Digest of the configuration in force", ["digest"], registry=r)
        self.tls_reloads = Counter("mcp_injector_tls_reloads", "TLS certificate reload attempts", ["result"], registry=r)

    def set_config_digest(self, digest: str) -> None:
        self.config_info.clear()
        self.config_info.labels(digest=digest).set(1)
