"""Prometheus metrics of the admission server, on a registry of its own (one per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._digest: str | None = None
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
        # livemax: with several admission workers, 1 = in force in at least one live worker.
        self.config_info = Gauge("mcp_injector_config_info", "Digest of the configuration in force", ["digest"], registry=r,
                                 multiprocess_mode="livemax")
        self.tls_reloads = Counter("mcp_injector_tls_reloads", "TLS certificate reload attempts", ["result"], registry=r)

        # operator
        self.propagations = Counter("mcp_injector_label_propagations", "Workload label propagations", ["action"], registry=r)
        self.companion_services = Counter("mcp_injector_companion_services", "Companion Service changes", ["action"], registry=r)
        self.missed_pods = Counter("mcp_injector_missed_pods_detected", "Labelled pods found without the sidecar", registry=r)
        self.stale_pods = Counter("mcp_injector_stale_pods_detected", "Pods whose sidecar differs from the current config", registry=r)
        self.evictions = Counter("mcp_injector_healing_evictions", "Evictions for re-injection", ["result"], registry=r)
        self.pods_by_state = Gauge("mcp_injector_labelled_pods", "Labelled pods by injection state (last sweep)", ["state"], registry=r)

    def set_config_digest(self, digest: str) -> None:
        if self._digest is not None and self._digest != digest:
            # prometheus_client's multiprocess files (`serve --workers N`) cannot drop a series: zero it.
            self.config_info.labels(digest=self._digest).set(0)
        if not values.ValueClass._multiprocess:
            self.config_info.clear()
        self.config_info.labels(digest=digest).set(1)
        self._digest = digest
