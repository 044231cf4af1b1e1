"""Schema-invalid input, in process: a malformed AdmissionReview is a 400 with a short message; a pod
the engine cannot read is admitted unchanged with a ``malformed-pod`` warning; nothing raises.

The API server only ever sends well-typed reviews and pods, so these come from another caller or
from ``inject -f``: the answer must be bounded and never a crash (a crash was a 500 from the server).
"""

from __future__ import annotations

import copy
import json

import pytest

from tests.webhook.helpers import admission_review, labelled_pod
from webhook.admission import review as review_module
from webhook.admission.review import BadReview, review
from webhook.engine.config import ConfigError, default_config, parse_config
from webhook.engine.injection import SkipReason, evaluate
from webhook.engine.overrides import image_allowed, image_repository

CONFIG = default_config()


def _redis_pod() -> dict:
    pod = labelled_pod()
    pod["spec"]["containers"][0].update({
        "ports": [{"name": "redis", "containerPort": 6379}],
        "env": [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "r", "key": "k"}}}],
        "volumeMounts": [{"name": "pw", "mountPath": "/s"}],
    })
    pod["spec"]["volumes"] = [{"name": "pw", "secret": {"secretName": "r"}}]
    return pod


DEEP = "__deep__"


def _raw(review_doc: dict, depth: int = 1020) -> bytes:
    """The review as JSON, with the string ``__deep__`` replaced by ``depth`` nested lists (deeper
    than Python's json module can build)."""
    return json.dumps(review_doc).replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()


def _set(path: tuple, value):
    def mutate(pod):
        node = pod
        for token in path[:-1]:
            node = node[token]
        node[path[-1]] = value
    return mutate


C0 = ("spec", "containers", 0)
# The issue's list (ports: 5, env not a list, valueFrom: "x", volumeMounts: [null], volumes: 9000,
# initContainers: 0) and the same shapes one level down.
MALFORMED = {
    "ports-int": _set(C0 + ("ports",), 5),
    "env-not-a-list": _set(C0 + ("env",), {"REDIS_PASSWORD": "x"}),
    "valueFrom-string": _set(C0 + ("env", 0, "valueFrom"), "x"),
    "secretKeyRef-nested": _set(C0 + ("env", 0, "valueFrom", "secretKeyRef"), {"name": [[["r"]]], "key": "k"}),
    "env-name-list": _set(C0 + ("env", 0, "name"), ["REDIS_PASSWORD"]),
    "volumeMounts-null-entry": _set(C0 + ("volumeMounts",), [None]),
    "volumes-int": _set(("spec", "volumes"), 9000),
    "volume-name-list": _set(("spec", "volumes", 0, "name"), ["pw"]),
    "secret-items-str": _set(("spec", "volumes", 0, "secret"), {"secretName": "r", "items": "pw"}),
    "initContainers-zero": _set(("spec", "initContainers"), 0),
    "containers-entry-string": _set(("spec", "containers"), ["redis"]),
    "annotation-not-string": _set(("metadata", "annotations"), {"mcp-sidecar.dox/port": [[[[9100]]]]}),
    "name-deep-list": _set(("metadata", "name"), DEEP),
}


@pytest.mark.parametrize("mutate", MALFORMED.values(), ids=MALFORMED.keys())
def test_schema_invalid_pod_is_admitted_unchanged_with_a_warning(mutate):
    pod = _redis_pod()
    mutate(pod)
    before = copy.deepcopy(pod)
    result = evaluate(json.loads(_raw(pod, depth=200)), None, CONFIG)
    assert result.skip_reason is SkipReason.MALFORMED_POD and result.patch == []
    assert result.warnings and len(result.warnings[0]) < 200, result.warnings
    assert pod == before
    outcome = review(_raw(admission_review(pod), depth=900), CONFIG)
    assert outcome.body["response"]["allowed"] is True and "patch" not in outcome.body["response"]
    assert outcome.body["response"]["warnings"][0].startswith("mcp-sidecar not injected:")


@pytest.mark.parametrize(
    "request_extra, fragment",
    [
        ({"operation": DEEP}, "request.operation must be a string"),
        ({"operation": 5}, "request.operation must be a string"),
        ({"namespace": {"a": 1}}, "request.namespace must be a string"),
        ({"subResource": ["status"]}, "request.subResource must be a string"),
        ({"kind": "Pod"}, "request.kind must be an object"),
        ({"resource": {"resource": ["pods"]}}, "request.resource must be an object"),
        ({"uid": "u" * 5000}, "uid is longer than"),
    ],
)
def test_malformed_envelope_is_a_400_with_a_short_message(request_extra, fragment):
    doc = admission_review(labelled_pod())
    doc["request"].update(request_extra)
    with pytest.raises(BadReview) as caught:
        review(_raw(doc), CONFIG)
    assert fragment in str(caught.value) and len(str(caught.value)) < 200


def test_a_5_mib_kind_is_not_echoed_back():
    doc = {"apiVersion": "admission.k8s.io/v1", "kind": "K" * (5 * 1024 * 1024), "request": {"uid": "x"}}
    with pytest.raises(BadReview) as caught:
        review(_raw(doc), CONFIG)
    assert "kind must be AdmissionReview" in str(caught.value) and len(str(caught.value)) < 200


def test_long_label_and_annotation_values_are_quoted_short():
    pod = labelled_pod("m" * 100_000)
    assert len(evaluate(pod, None, CONFIG).warnings[0]) < 300
    pod = labelled_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/inject": "y" * 100_000}
    assert len(evaluate(pod, None, CONFIG).warnings[0]) < 300
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/port": "9" * 100_000}
    assert len(evaluate(pod, None, CONFIG).warnings[0]) < 300


def test_an_engine_bug_admits_the_pod_unchanged_instead_of_failing(monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("x" * 10_000)

    monkeypatch.setattr(review_module, "evaluate", broken)
    outcome = review(_raw(admission_review(labelled_pod())), CONFIG)
    assert outcome.result == "error" and isinstance(outcome.error, KeyError)
    response = outcome.body["response"]
    assert response["allowed"] is True and "patch" not in response
    assert response["warnings"] == ["mcp-sidecar not injected: internal error in the injector; see its log"]


# ---- image allow-list --------------------------------------------------------------------------


def _with_image(image: str, config=CONFIG):
    pod = labelled_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/image": image}
    return evaluate(pod, None, config)


@pytest.mark.parametrize("image", ["mcp/redis:1.2", "docker.io/mcp/redis:9", "index.docker.io/mcp/redis@sha256:" + "a" * 64])
def test_default_allow_list_admits_tags_of_the_backends_own_image(image):
    result = _with_image(image)
    assert result.injected and result.rendered.container["image"] == image


@pytest.mark.parametrize("image", ["evil.example.com/mcp/redis:1.2", "mcp/elasticsearch:latest", "redis:7",
                                   "mcp/redis-evil:1", "docker.io/mcp/redis.evil:1"])
def test_default_allow_list_refuses_any_other_image(image):
    result = _with_image(image)
    assert result.skip_reason is SkipReason.INVALID_OVERRIDE and result.patch == []
    assert "mcp-sidecar.dox/image" in result.warnings[0] and "allowedImages" in result.warnings[0]


def test_configured_allow_list_is_matched_on_whole_path_components():
    config = parse_config("allowedImages: [registry.example.com/mcp/, localhost:5000]\n")
    assert _with_image("registry.example.com/mcp/redis:1.2.0", config).injected
    assert _with_image("localhost:5000/anything/redis:1", config).injected
    assert not _with_image("registry.example.com/mcp-evil/redis:1", config).injected
    assert not _with_image("mcp/redis:1", config).injected  # an explicit list replaces the default
    assert _with_image("anything.example/x:1", parse_config("allowedImages: ['*']\n")).injected
    assert not _with_image("mcp/redis:1", parse_config("allowedImages: []\n")).injected


@pytest.mark.parametrize("text", ["allowedImages: registry.example.com\n", "allowedImages: [mcp/redis:1.2]\n",
                                  "allowedImages: ['mcp/redis@sha256:00']\n", "allowedImages: ['']\n"])
def test_invalid_allow_list_is_a_config_error(text):
    with pytest.raises(ConfigError, match=r"allowedImages(\[\d+\])? must"):
        parse_config(text)


def test_image_repository_resolves_like_a_registry():
    assert image_repository("redis") == "docker.io/library/redis"
    assert image_repository("mcp/redis:1") == "docker.io/mcp/redis"
    assert image_repository("localhost:5000/mcp/redis:1@sha256:" + "0" * 64) == "localhost:5000/mcp/redis"
    assert image_allowed("redis:7", ("docker.io/library/redis",)) and not image_allowed("redis:7", ())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_reviews_never_raise_in_the_engine(seed):
    """In process, so many more reviews than the real-server fuzz (tests/security) can afford: no
    mutation may reach the engine-bug path (which would admit the pod unchanged, hiding the bug)."""
    from tests.security.mutations import encode, mutated_reviews

    for index, doc in enumerate(mutated_reviews(seed, 3000)):
        try:
            outcome = review(encode(doc), CONFIG)
        except BadReview:
            continue
        assert outcome.error is None, f"seed {seed} index {index}: {outcome.error!r}"
