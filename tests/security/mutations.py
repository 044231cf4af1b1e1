"""A seeded generator of mutated AdmissionReviews, for fuzzing the admission server.

Seeds are realistic labelled pods (env with secretKeyRef and *_FILE, ports, Secret volumes and
mounts, init containers, override annotations); each review replaces, deletes or nests one to three
nodes anywhere in the document with a value of the wrong type. Deterministic for a given seed, so a
failure is reproducible from the seed and index the test prints.
"""

from __future__ import annotations

import copy
import json
import random
import sys
from typing import Any, Iterator

from tests.webhook.helpers import admission_review, labelled_pod


def seed_pods() -> list[dict[str, Any]]:
    redis = labelled_pod(
        "redis",
        initContainers=[{"name": "init", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        volumes=[{"name": "pw", "secret": {"secretName": "redis", "items": [{"key": "redis-password", "path": "pw"}]}},
                 {"name": "data", "emptyDir": {}}],
    )
    redis["spec"]["containers"][0].update({
        "ports": [{"name": "redis", "containerPort": 6379}],
        "env": [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "redis-password"}}},
                {"name": "REDIS_PASS_FILE", "value": "/secrets/pw"}],
        "volumeMounts": [{"name": "pw", "mountPath": "/secrets"}],
    })
    redis["metadata"]["annotations"] = {"mcp-sidecar.dox/port": "9100", "mcp-sidecar.dox/cpu-request": "50m",
                                        "mcp-sidecar.dox/image": "mcp/redis:1.1", "mcp-sidecar.dox/read-only": "true"}
    es = labelled_pod("elasticsearch")
    es["spec"]["containers"][0].update({
        "ports": [{"name": "http", "containerPort": 9200}, {"name": "transport", "containerPort": 9300}],
        "env": [{"name": "ELASTIC_PASSWORD", "value": "literal"}],
    })
    es["spec"]["restartPolicy"] = "Never"
    plain = labelled_pod("redis")
    return [redis, es, plain]


def _junk(rng: random.Random) -> Any:
    choice = rng.randrange(12)
    if choice == 0:
        return rng.randrange(-(2**63), 2**63)
    if choice == 1:
        return "x" * rng.choice((0, 1, 70, 5000))
    if choice == 2:
        return None
    if choice == 3:
        return [None, 1, "a"][: rng.randrange(4)]
    if choice == 4:
        return {"a": rng.choice((None, 1, [], {}))}
    if choice == 5:
        return rng.choice((True, False))
    if choice == 6:
        return rng.random() * 1e300
    if choice == 7:  # deep nesting, just under orjson's 1024 limit
        value: Any = "deep"
        for _ in range(rng.choice((10, 500, 1000))):
            value = [value]
        return value
    if choice == 8:
        return [[]] * rng.randrange(1, 50)
    if choice == 9:
        return "\u0000\ud7ff\u2028/~1~0" * rng.randrange(1, 4)
    if choice == 10:
        return {}
    return []


def _nodes(document: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, document
    if len(path) >= 12:  # below that, only the generator's own deep junk
        return
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _nodes(value, path + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _nodes(value, path + (index,))


def _mutate(document: Any, rng: random.Random) -> Any:
    nodes = [p for p, _ in _nodes(document) if p]
    if not nodes:
        return _junk(rng)
    path = rng.choice(nodes)
    parent = document
    for token in path[:-1]:
        parent = parent[token]
    last = path[-1]
    action = rng.randrange(4)
    if action == 0 and isinstance(parent, dict):
        del parent[last]
    elif action == 1:
        parent[last] = [parent[last]] if rng.random() < 0.5 else {"k": parent[last]}
    else:
        parent[last] = _junk(rng)
    return document


def encode(review: Any) -> bytes:
    """JSON bytes; the stdlib encoder also writes documents nested deeper than orjson accepts."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        return json.dumps(review).encode()
    finally:
        sys.setrecursionlimit(limit)


def mutated_reviews(seed: int, count: int) -> Iterator[dict[str, Any]]:
    """``count`` AdmissionReviews, each a seed pod's review with 1-3 mutations (or the pod itself)."""
    rng = random.Random(seed)
    pods = seed_pods()
    for index in range(count):
        review = admission_review(copy.deepcopy(pods[index % len(pods)]), uid=f"fuzz-{seed}-{index}")
        # Three in four mutate inside the pod (the engine's input), one in four anywhere (the envelope).
        in_pod = rng.random() < 0.75
        target = review["request"]["object"] if in_pod else review
        for _ in range(rng.randrange(1, 4)):
            target = _mutate(target, rng)
        if in_pod:
            review["request"]["object"] = target
        else:
            review = target
        yield review
