"""Prometheus metrics on ``GET /metrics``, in a private registry (no process collector noise)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Tool calls are sub-millisecond to a few hundred ms; buckets cover both ends.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The sidecar's metrics; one instance per process."""

    def __init__(self, backend: str):
        self.registry = CollectorRegistry(auto_describe=True)
        self.tool_calls = Counter(
            "mcp_tool_calls", "MCP tool calls by tool and outcome.", ["tool", "outcome"], registry=self.registry
        )
        self.tool_latency = Histogram(
            "mcp_tool_call_duration_seconds", "MCP tool call latency.", ["tool"], buckets=_BUCKETS,
            registry=self.registry,
        )
        self.backend_errors = Counter(
            "mcp_backend_errors", "Errors talking to the backend, by kind.", ["backend", "kind"],
            registry=self.registry,
        )
        self.backend_up = Gauge(
            "mcp_backend_up", "1 when the last backend health check succeeded.", ["backend"], registry=self.registry
        )
        self.backend = backend

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
