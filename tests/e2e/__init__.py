"""End-to-end tests against a real local control plane (tests/cluster)."""
