"""The operator's token-Secret bookkeeping: one create per namespace, however many pods (the API
server's side — 409, labels, never overwritten — is tests/e2e/test_token_secret.py)."""

from __future__ import annotations

import threading

from kubernetes.client.rest import ApiException

from webhook.operator.token_secret import TokenSecrets, token_secret


class CountingCore:
    """Answers create like the API server: 201 the first time per namespace, then 409."""

    def __init__(self, fail_with: int | None = None):
        self.creates: list[str] = []
        self.existing: set[str] = set()
        self.fail_with = fail_with
        self.lock = threading.Lock()

    def create_namespaced_secret(self, namespace, body):
        with self.lock:
            self.creates.append(namespace)
            if self.fail_with:
                raise ApiException(status=self.fail_with, reason="Forbidden")
            if namespace in self.existing:
                raise ApiException(status=409, reason="AlreadyExists")
            self.existing.add(namespace)


def test_ten_thousand_pod_events_cost_one_create_per_namespace():
    core, secrets = CountingCore(), TokenSecrets()
    results = [secrets.ensure(core, f"ns-{i % 3}") for i in range(10_000)]
    assert core.creates.count("ns-0") == 1 and len(core.creates) == 3
    assert results.count("created") == 3 and results.count("cached") == 10_000 - 3


def test_concurrent_events_for_a_new_namespace_make_one_request():
    core, secrets = CountingCore(), TokenSecrets()
    threads = [threading.Thread(target=secrets.ensure, args=(core, "busy")) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert core.creates == ["busy"]


def test_existing_secret_is_left_alone_and_kube_system_never_touched():
    core, secrets = CountingCore(), TokenSecrets()
    core.existing.add("team")
    assert secrets.ensure(core, "team") == "exists"  # a 409: never read, never overwritten
    assert secrets.ensure(core, "kube-system") == "skipped" and secrets.ensure(core, "") == "skipped"
    assert core.creates == ["team"]


def test_a_denied_create_is_retried_later_not_on_every_event():
    core, secrets = CountingCore(fail_with=403), TokenSecrets(retry_seconds=3600)
    assert [secrets.ensure(core, "locked") for _ in range(100)] == ["error"] + ["cached"] * 99
    assert core.creates == ["locked"]
    retrying = TokenSecrets(retry_seconds=0)
    retrying.ensure(core, "locked"), retrying.ensure(core, "locked")
    assert core.creates == ["locked"] * 3


def test_the_secret_is_labelled_as_ours_and_holds_256_random_bits():
    one, two = token_secret("ns"), token_secret("ns")
    assert one["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "mcp-sidecar-injector", "mcp-sidecar.dox/token": "true"}
    assert one["type"] == "Opaque" and one["metadata"]["name"] == "mcp-sidecar-token"
    token = one["stringData"]["token"]
    assert len(token) == 64 and int(token, 16) >= 0 and token != two["stringData"]["token"]
