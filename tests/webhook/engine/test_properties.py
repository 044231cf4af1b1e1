"""Property-based: over generated pods the patch always applies, touches no other container, and a
second pass is empty."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.webhook.helpers import apply
from webhook.engine.config import parse_config
from webhook.engine.constants import LABEL_BACKEND, SIDECAR_CONTAINER_NAME
from webhook.engine.injection import evaluate

CONFIGS = [parse_config(None), parse_config("nativeSidecar: true")]

names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
ports = st.lists(
    st.fixed_dictionaries({"containerPort": st.integers(1, 65535)}, optional={"name": st.sampled_from(["redis", "http", "metrics", "tcp-redis"])}),
    max_size=3,
)
env = st.lists(
    st.one_of(
        st.fixed_dictionaries({"name": st.sampled_from(["REDIS_PASSWORD", "ELASTIC_PASSWORD", "FOO"]), "value": st.text(max_size=5)}),
        st.fixed_dictionaries(
            {"name": st.sampled_from(["REDIS_PASSWORD", "ES_PASSWORD"]), "valueFrom": st.fixed_dictionaries({"secretKeyRef": st.fixed_dictionaries({"name": names, "key": names})})}
        ),
    ),
    max_size=3,
)
container = st.fixed_dictionaries({"name": names, "image": st.sampled_from(["redis:7", "bitnami/redis", "elasticsearch:8", "nginx"])}, optional={"ports": ports, "env": env})
annotation_values = st.dictionaries(
    st.sampled_from(
        ["mcp-sidecar.dox/port", "mcp-sidecar.dox/native", "mcp-sidecar.dox/image", "mcp-sidecar.dox/memory-limit", "mcp-sidecar.dox/inject", "other/x~y", "mcp-sidecar.dox/password-secret"]
    ),
    st.one_of(st.sampled_from(["9100", "true", "false", "mcp/redis:2", "128Mi", "x"]), st.text(max_size=4)),
    max_size=3,
)


@st.composite
def pods(draw):
    metadata = {"name": draw(names)}
    labels = draw(st.dictionaries(names, names, max_size=2))
    if draw(st.booleans()):
        labels[LABEL_BACKEND] = draw(st.sampled_from(["redis", "elasticsearch", "redis", "mongo"]))
    if labels or draw(st.booleans()):
        metadata["labels"] = labels
    annotations = draw(annotation_values)
    if annotations or draw(st.booleans()):
        metadata["annotations"] = annotations
    spec = {"containers": draw(st.lists(container, min_size=1, max_size=3, unique_by=lambda c: c["name"]))}
    if draw(st.booleans()):
        spec["initContainers"] = draw(st.lists(container, max_size=2, unique_by=lambda c: c["name"]))
    if draw(st.booleans()):
        spec["volumes"] = [{"name": n, "emptyDir": {}} for n in draw(st.lists(names, max_size=2, unique=True))]
    if draw(st.booleans()):
        spec["restartPolicy"] = draw(st.sampled_from(["Always", "Never", "OnFailure"]))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=pods(), config_index=st.integers(0, 1))
def test_patch_applies_preserves_others_and_is_idempotent(pod, config_index):
    config = CONFIGS[config_index]
    original = copy.deepcopy(pod)
    result = evaluate(pod, None, config)
    assert pod == original, "the engine must not mutate its input"
    patched = apply(pod, result.patch)
    if not result.injected:
        assert result.patch == [] and patched == original
        return
    def others(p, key):
        return [c for c in p["spec"].get(key) or [] if c["name"] != SIDECAR_CONTAINER_NAME]
    for key in ("containers", "initContainers"):
        assert others(patched, key) == (original["spec"].get(key) or [])
    assert {k: v for k, v in patched["metadata"].get("labels", {}).items()} == original["metadata"].get("labels", {})
    for key, value in (original["metadata"].get("annotations") or {}).items():
        assert patched["metadata"]["annotations"][key] == value
    second = evaluate(patched, None, config)
    assert second.patch == []
