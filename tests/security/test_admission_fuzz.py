"""The real admission server (`mcp-sidecar serve`, TLS) under malformed and hostile AdmissionReviews.

Seeded and bounded: ``FUZZ_REVIEWS`` reviews (default 2,000) or ``FUZZ_SECONDS`` (default 60 s),
whichever ends first; ``FUZZ_SEED`` picks another corpus. A failure prints the seed and index, so
``tests.security.mutations.mutated_reviews(seed, index + 1)`` reproduces it.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.security.conftest import proc_status_kib
from tests.security.mutations import encode, mutated_reviews
from tests.webhook.helpers import admission_review, labelled_pod

SEED = int(os.environ.get("FUZZ_SEED", "20261130"))
REVIEWS = int(os.environ.get("FUZZ_REVIEWS", "2000"))
SECONDS = float(os.environ.get("FUZZ_SECONDS", "60"))
#: The chart's limit is 256 Mi; a fuzzed review is at most a few MiB.
MAX_RSS_KIB = 200 * 1024
#: No log line may carry more than this much of a request.
MAX_LOG_LINE = 2048


def _post(client, body: bytes):
    return client.post("/mutate", content=body, headers={"content-type": "application/json"})


def _log_lines_over(webhook, limit: int = MAX_LOG_LINE) -> list[str]:
    return [line[:120] + "..." for line in webhook.log().splitlines() if len(line) > limit]


def test_fuzzed_reviews_never_get_a_5xx_or_crash_the_server(webhook, webhook_client):
    statuses: dict[int, int] = {}
    failures: list[str] = []
    started = time.monotonic()
    sent = 0
    for index, doc in enumerate(mutated_reviews(SEED, REVIEWS)):
        if time.monotonic() - started > SECONDS:
            break
        response = _post(webhook_client, encode(doc))
        sent += 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500 or response.status_code not in (200, 400):
            failures.append(f"seed {SEED} index {index}: {response.status_code} {response.text[:200]}")
        elif response.status_code == 200 and response.json()["response"]["allowed"] is not True:
            failures.append(f"seed {SEED} index {index}: a pod was refused")
        elif len(response.content) > 64 * 1024 and response.status_code == 400:
            failures.append(f"seed {SEED} index {index}: a {len(response.content)}-byte 400")
    elapsed = time.monotonic() - started
    alive = webhook.process.poll() is None
    hwm = proc_status_kib(webhook.process.pid, "VmHWM") if alive else -1
    tracebacks = webhook.log().count("Traceback")
    fivexx = sum(n for status, n in statuses.items() if status >= 500)
    print(f"\n[fuzz] seed {SEED}: {sent} reviews in {elapsed:.1f}s, statuses {dict(sorted(statuses.items()))}, "
          f"5xx {fivexx}, crashes {0 if alive else 1}, tracebacks in log {tracebacks}, max RSS (VmHWM) {hwm / 1024:.1f} MiB")
    assert sent >= min(REVIEWS, 200), "the fuzzer sent too few reviews to mean anything"
    assert not failures, "\n".join(failures[:20])
    assert alive and tracebacks == 0, webhook.log()[-3000:]
    # An engine exception admits the pod unchanged (never a 500), but it is still a bug to find here.
    assert "internal error" not in webhook.log(), webhook.log()[-3000:]
    assert hwm < MAX_RSS_KIB
    assert not _log_lines_over(webhook)


def _raw(doc: dict, deep: int = 0) -> bytes:
    text = json.dumps(doc)
    return text.replace('"__deep__"', "[" * deep + "]" * deep).encode() if deep else text.encode()


def _pod_with(path: tuple, value) -> dict:
    pod = labelled_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "r", "key": "k"}}}]
    pod["spec"]["containers"][0]["ports"] = [{"name": "redis", "containerPort": 6379}]
    node = pod
    for token in path[:-1]:
        node = node[token]
    node[path[-1]] = value
    return pod


C0 = ("spec", "containers", 0)
ISSUE_PODS = {
    "ports: 5": _pod_with(C0 + ("ports",), 5),
    "env not a list": _pod_with(C0 + ("env",), "REDIS_PASSWORD=x"),
    'valueFrom: "x"': _pod_with(C0 + ("env", 0, "valueFrom"), "x"),
    "volumeMounts: [null]": _pod_with(C0 + ("volumeMounts",), [None]),
    "volumes: 9000": _pod_with(("spec", "volumes"), 9000),
    "volume name a list": _pod_with(("spec", "volumes"), [{"name": ["tmp"], "emptyDir": {}}]),
    "initContainers: 0": _pod_with(("spec", "initContainers"), 0),
}


@pytest.mark.parametrize("pod", ISSUE_PODS.values(), ids=ISSUE_PODS.keys())
def test_schema_invalid_pods_from_the_issue_are_admitted_unchanged_with_a_warning(webhook_client, pod):
    """These got a 500 before: the API server never sends them, so the pod is left for it to judge."""
    response = _post(webhook_client, _raw(admission_review(pod)))
    assert response.status_code == 200, response.text
    body = response.json()["response"]
    assert body["allowed"] is True and "patch" not in body
    assert body["warnings"][0].startswith("mcp-sidecar not injected:") and "is not" in body["warnings"][0]


def test_an_operation_nested_1020_deep_is_a_400(webhook_client):
    doc = admission_review(labelled_pod())
    doc["request"]["operation"] = "__deep__"
    response = _post(webhook_client, _raw(doc, deep=1020))
    assert response.status_code == 400 and "operation must be a string" in response.json()["error"]


def test_a_5_mib_kind_is_neither_echoed_nor_logged_whole(webhook, webhook_client):
    before = len(webhook.log())
    doc = {"apiVersion": "admission.k8s.io/v1", "kind": "K" * (5 * 1024 * 1024), "request": {"uid": "u"}}
    response = _post(webhook_client, _raw(doc))
    assert response.status_code == 400 and len(response.content) < 1024
    time.sleep(0.2)
    new_log = webhook.log()[before:]
    assert "kind must be AdmissionReview" in new_log
    assert max(len(line) for line in new_log.splitlines()) < 1024


def test_override_values_are_logged_cut(webhook, webhook_client):
    before = len(webhook.log())
    pod = labelled_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/port": "9" * 1_000_000}
    response = _post(webhook_client, _raw(admission_review(pod)))
    assert response.status_code == 200 and len(response.content) < 2048
    time.sleep(0.2)
    new_log = webhook.log()[before:]
    assert "mcp-sidecar.dox/port" in new_log and max(len(line) for line in new_log.splitlines()) < 1024


def test_1_mib_operations_do_not_grow_metrics_or_memory(webhook, webhook_client):
    """60 requests with 1 MiB operations once made one /metrics scrape peak at 487 MiB."""
    for i in range(60):
        response = _post(webhook_client, _raw(admission_review(labelled_pod(), uid=f"op-{i}", operation=f"{i}" + "X" * (1 << 20))))
        assert response.status_code == 200
    scrape = webhook_client.get("/metrics")
    rss = proc_status_kib(webhook.process.pid, "VmRSS")
    print(f"\n[metrics] after 60 x 1 MiB operations: /metrics {len(scrape.content)} bytes, RSS {rss / 1024:.1f} MiB")
    assert len(scrape.content) < 64 * 1024 and "XXXX" not in scrape.text
    assert rss < MAX_RSS_KIB
