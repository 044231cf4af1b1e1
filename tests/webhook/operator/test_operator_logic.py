"""Pure decisions behind the operator and the operator CLI: propagation, companion Service,
pod classification, selectors, check-inject explanations, audit rendering."""

from __future__ import annotations

import json

import jsonpatch

from tests.webhook.helpers import labelled_pod
from webhook.cli.audit import failures, parse_fail_on, render, summarize
from webhook.cli.check_inject import explain
from webhook.operator.events import EventPoster
from webhook.operator.companion import companion_name, desired_service, service_differs, wants_companion
from webhook.engine.config import parse_config
from webhook.engine.constants import ANNOTATION_STATUS, LABEL_BACKEND
from webhook.engine.injection import evaluate
from webhook.engine.pod_audit import INJECTED, MISSED, OPTED_OUT, SKIPPED, audit_pod, owner_of
from webhook.operator.propagation import ANNOTATION_PROPAGATED, plan_propagation
from webhook.engine.selectors import describe_selector, selector_matches

CONFIG = parse_config(None)


def statefulset(workload_label=None, template_label=None, marker=None):
    meta = {"name": "redis", "namespace": "ns", "uid": "u-1", "labels": {"app": "redis"}, "annotations": {}}
    if workload_label:
        meta["labels"][LABEL_BACKEND] = workload_label
    if marker:
        meta["annotations"][ANNOTATION_PROPAGATED] = marker
    template_labels = {"app": "redis"}
    if template_label:
        template_labels[LABEL_BACKEND] = template_label
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
            "spec": {"selector": {"matchLabels": {"app": "redis"}}, "template": {"metadata": {"labels": template_labels}, "spec": {"containers": [{"name": "redis", "image": "redis"}]}}}}


def merge(target, patch):
    """RFC 7386 JSON merge patch, as the API server applies the operator's patch."""
    target = json.loads(json.dumps(target))
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            target[key] = merge(target.get(key) or {}, value)
        else:
            target[key] = value
    return target


def test_label_on_workload_is_copied_to_the_template_with_a_marker():
    plan = plan_propagation(statefulset(workload_label="redis"))
    assert plan.action == "add"
    after = merge(statefulset(workload_label="redis"), plan.patch)
    assert after["spec"]["template"]["metadata"]["labels"][LABEL_BACKEND] == "redis"
    assert after["metadata"]["annotations"][ANNOTATION_PROPAGATED] == "redis"
    assert after["spec"]["template"]["metadata"]["labels"]["app"] == "redis"  # nothing else touched
    assert plan_propagation(after).patch is None  # converged


def test_removing_the_workload_label_removes_only_what_the_operator_added():
    propagated = statefulset(template_label="redis", marker="redis")
    plan = plan_propagation(propagated)
    after = merge(propagated, plan.patch)
    assert plan.action == "remove" and LABEL_BACKEND not in after["spec"]["template"]["metadata"]["labels"]
    assert ANNOTATION_PROPAGATED not in after["metadata"]["annotations"]
    chart_owned = statefulset(template_label="redis")
    assert plan_propagation(chart_owned).patch is None  # the chart's own template label stays


def test_value_changes_follow_but_chart_values_are_not_fought():
    plan = plan_propagation(statefulset(workload_label="elasticsearch", template_label="redis", marker="redis"))
    assert plan.action == "update" and plan.patch["spec"]["template"]["metadata"]["labels"][LABEL_BACKEND] == "elasticsearch"
    conflict = plan_propagation(statefulset(workload_label="elasticsearch", template_label="redis"))
    assert conflict.action == "conflict" and conflict.patch is None


def test_companion_service_selects_the_workload_pods_on_the_mcp_port():
    workload = statefulset(template_label="redis")
    assert wants_companion(workload) and not wants_companion(statefulset())
    service = desired_service(workload)
    assert service["metadata"]["name"] == "redis-mcp"
    assert service["spec"]["selector"] == {"app": "redis"}
    assert service["spec"]["ports"] == [{"name": "mcp", "port": 9000, "targetPort": "mcp", "protocol": "TCP"}]
    owner = service["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "StatefulSet" and owner["uid"] == "u-1" and owner["controller"] is True
    assert not service_differs(service, service)
    assert companion_name("x" * 80).endswith("-mcp") and len(companion_name("x" * 80)) <= 63
    expressions_only = statefulset(template_label="redis")
    expressions_only["spec"]["selector"] = {"matchExpressions": [{"key": "app", "operator": "Exists"}]}
    assert desired_service(expressions_only) is None


def injected_pod(config=CONFIG):
    pod = labelled_pod()
    pod["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "cache-5d8f", "controller": True, "uid": "r"}]
    pod["metadata"]["labels"]["pod-template-hash"] = "5d8f"
    return jsonpatch.apply_patch(pod, evaluate(pod, None, config).patch)


def test_audit_states():
    pod = injected_pod()
    row = audit_pod(pod, {}, CONFIG)
    assert (row.state, row.stale, row.owner, row.image) == (INJECTED, False, "Deployment/cache", "mcp/redis:latest")
    newer = parse_config("backends: {redis: {image: 'mcp/redis:2'}}")
    assert audit_pod(pod, {}, newer).stale is True
    assert audit_pod(labelled_pod(), {}, CONFIG).state == MISSED
    opted = labelled_pod()
    opted["metadata"]["annotations"] = {"mcp-sidecar.dox/inject": "false"}
    assert audit_pod(opted, {}, CONFIG).state == OPTED_OUT
    assert audit_pod(labelled_pod(), {"mcp-sidecar.dox/injection": "disabled"}, CONFIG).state == OPTED_OUT
    unknown = audit_pod(labelled_pod("mongo"), {}, CONFIG)
    assert unknown.state == SKIPPED and unknown.reason == "unknown-backend"
    tampered = injected_pod()
    tampered["spec"]["containers"] = tampered["spec"]["containers"][:1]
    assert audit_pod(tampered, {}, CONFIG).state == MISSED


def test_sidecar_readiness_comes_from_container_statuses():
    pod = injected_pod()
    pod["status"] = {"containerStatuses": [{"name": "redis", "ready": True}, {"name": "mcp-sidecar", "ready": False}]}
    rows = [audit_pod(pod, {}, CONFIG)]
    assert rows[0].sidecar_ready is False
    assert failures(rows, {"unready"}) == rows and failures(rows, {"missed"}) == []


def test_owner_of_bare_and_statefulset_pods():
    assert owner_of(labelled_pod()) == "-"
    pod = labelled_pod()
    pod["metadata"]["ownerReferences"] = [{"kind": "StatefulSet", "name": "redis", "controller": True}]
    assert owner_of(pod) == "StatefulSet/redis"


def test_audit_table_json_and_summary():
    rows = [audit_pod(injected_pod(), {}, CONFIG), audit_pod(labelled_pod(), {}, CONFIG)]
    table = render(rows, "table")
    assert table.splitlines()[0].split()[:5] == ["NAMESPACE", "POD", "OWNER", "BACKEND", "STATE"]
    assert "missed" in table and summarize(rows) in table
    assert summarize(rows) == "2 labelled pods: 1 injected (0 stale, 0 sidecars ready), 1 missed, 0 opted out, 0 skipped"
    data = json.loads(render(rows, "json"))
    assert [p["state"] for p in data["pods"]] == ["injected", "missed"]
    assert parse_fail_on("missed, stale") == {"missed", "stale"}


def test_selectors():
    selector = {"matchLabels": {"a": "1"}, "matchExpressions": [
        {"key": "b", "operator": "In", "values": ["x", "y"]}, {"key": "c", "operator": "DoesNotExist"},
        {"key": "d", "operator": "NotIn", "values": ["no"]}, {"key": "e", "operator": "Exists"}]}
    assert selector_matches(selector, {"a": "1", "b": "x", "e": ""})
    assert not selector_matches(selector, {"a": "1", "b": "z", "e": ""})
    assert not selector_matches(selector, {"a": "1", "b": "x", "e": "", "c": "1"})
    assert not selector_matches(selector, {"a": "1", "b": "x", "e": "", "d": "no"})
    assert selector_matches(None, {}) and selector_matches({}, {"x": "y"})
    assert describe_selector(selector) == "a=1, b in (x,y), !c, d notin (no), e"


def mwc(name="mcp-sidecar-injector", hook="inject.mcp-sidecar.dox"):
    return {"metadata": {"name": name}, "webhooks": [{
        "name": hook,
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "objectSelector": {"matchExpressions": [{"key": LABEL_BACKEND, "operator": "Exists"}]},
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]},
            {"key": "mcp-sidecar.dox/injection", "operator": "NotIn", "values": ["disabled"]}]},
    }]}


def test_check_inject_explanations():
    ns = {"kubernetes.io/metadata.name": "apps"}
    ok = explain(labelled_pod(), ns, [mwc()], CONFIG)
    assert ok.injected and ok.webhooks == ["mcp-sidecar-injector/inject.mcp-sidecar.dox"]

    assert "is the injector installed" in explain(labelled_pod(), ns, [], CONFIG).reasons[0]
    disabled = explain(labelled_pod(), {**ns, "mcp-sidecar.dox/injection": "disabled"}, [mwc()], CONFIG)
    assert not disabled.injected and "namespaceSelector" in disabled.reasons[0]
    unlabelled = labelled_pod()
    del unlabelled["metadata"]["labels"][LABEL_BACKEND]
    assert "objectSelector" in explain(unlabelled, ns, [mwc()], CONFIG).reasons[0]

    workload = statefulset(workload_label="redis")
    on_workload = explain(unlabelled, ns, [mwc()], CONFIG, workload=workload)
    assert "is on the StatefulSet redis, not on its pod template" in on_workload.reasons[0]

    twice = explain(labelled_pod(), ns, [mwc(), mwc("old-install")], CONFIG)
    assert twice.injected and any("more than one webhook matches" in n for n in twice.notes)

    opted = labelled_pod()
    opted["metadata"]["annotations"] = {"mcp-sidecar.dox/inject": "false"}
    assert explain(opted, ns, [mwc()], CONFIG).reasons[0].startswith("opted-out")

    done = injected_pod()
    assert explain(done, ns, [mwc()], CONFIG).notes[0].startswith("already injected") and ANNOTATION_STATUS in done["metadata"]["annotations"]


def test_a_crashed_operator_terminates_instead_of_holding_the_lease(monkeypatch):
    """kopf dying inside a Ready, leading pod would silently stop propagation, Services and healing."""
    import threading

    import kopf
    from kubernetes import client

    from webhook.shared.metrics import Metrics
    from webhook.operator.controller import Operator, OperatorOptions, OperatorRunner

    async def crashing_operator(**kwargs):
        assert kwargs["identity"]  # never kopf's getpass.getuser() default (no passwd entry in the image)
        raise KeyError("getpwuid(): uid not found: 1000")

    monkeypatch.setattr(kopf, "operator", crashing_operator)
    fatal = threading.Event()
    operator = Operator(client.ApiClient(), lambda: parse_config(None), Metrics(),
                        OperatorOptions(leader_election=False, resync_seconds=3600))
    runner = OperatorRunner(operator, on_fatal=fatal.set)
    runner.start()
    try:
        assert fatal.wait(10), "the crash went unnoticed"
        assert not runner.ready.is_set()
    finally:
        runner.stop(timeout=2)


def test_healing_evicts_one_pod_per_interval_without_waiting_for_the_resync():
    """N missed pods are healed in about N x heal_interval, not N x the 60 s resync (found on the real node)."""
    import copy
    import threading
    import time
    import types

    from kubernetes import client

    from webhook.shared.metrics import Metrics
    from webhook.operator.controller import Operator, OperatorOptions

    evicted: list[tuple[str, float]] = []
    done = threading.Event()
    pods = {}
    for i in range(3):
        pod = labelled_pod()
        pod["metadata"].update(name=f"redis-{i}", uid=f"uid-{i}", creationTimestamp="2026-01-01T00:00:00Z",
                               ownerReferences=[{"kind": "StatefulSet", "name": "redis", "uid": "sts", "controller": True,
                                                 "apiVersion": "apps/v1"}])
        pods[pod["metadata"]["name"]] = pod

    def dry_run_create(namespace, body, dry_run=None):
        injected = copy.deepcopy(body)
        injected["spec"]["containers"].append({"name": "mcp-sidecar", "image": "mcp/redis:latest"})
        return injected

    def evict(name, namespace, body):
        evicted.append((name, time.monotonic()))
        if len(evicted) == len(pods):
            done.set()

    core = types.SimpleNamespace(
        read_namespace=lambda name: types.SimpleNamespace(metadata=types.SimpleNamespace(labels={})),
        read_namespaced_pod=lambda name, namespace: pods[name],
        create_namespaced_pod=dry_run_create,
        create_namespaced_pod_eviction=evict,
        create_namespaced_event=lambda namespace, event: None,
        create_namespaced_secret=lambda namespace, body: None,
    )
    operator = Operator(client.ApiClient(), lambda: parse_config(None), Metrics(),
                        OperatorOptions(heal=True, heal_interval=0.3, leader_election=False))
    operator.core = core
    operator.events = EventPoster(None, post=lambda namespace, body: None)
    t0 = time.monotonic()
    try:
        for pod in pods.values():
            assert operator.handle_pod(pod).state == MISSED
        assert done.wait(5), f"only {evicted} evicted"
    finally:
        operator.cancel_retries()
    times = [t - t0 for _, t in evicted]
    assert sorted(n for n, _ in evicted) == sorted(pods)  # each pod once
    assert times[-1] < 2.0, times  # ~0.6 s: one per interval, no pod left for the resync
    assert all(b - a >= 0.29 for a, b in zip(times, times[1:])), times  # still rate-limited


def test_a_missed_pod_is_announced_once_and_its_owner_once_per_condition():
    """Issue 12: 10 missed replicas made 20 Events, again on every resync of a restarted operator.
    Now each pod once, its StatefulSet once (with the first pod's message); judging again posts nothing."""
    import types

    from kubernetes import client

    from webhook.operator.controller import Operator, OperatorOptions
    from webhook.shared.metrics import Metrics

    posted: list[dict] = []
    operator = Operator(client.ApiClient(), lambda: CONFIG, Metrics(), OperatorOptions(leader_election=False))
    operator.core = types.SimpleNamespace(
        read_namespace=lambda name: types.SimpleNamespace(metadata=types.SimpleNamespace(labels={})),
        create_namespaced_secret=lambda namespace, body: None)
    operator.events = EventPoster(None, post=lambda namespace, body: body["reason"].startswith("MCPSidecar") and posted.append(body))
    pods = []
    for i in range(3):
        pod = labelled_pod()
        pod["metadata"].update(name=f"redis-{i}", uid=f"uid-{i}", resourceVersion=str(10 + i),
                               ownerReferences=[{"kind": "StatefulSet", "name": "redis", "uid": "sts", "controller": True}])
        pods.append(pod)
    for _ in range(2):  # the start-up pass, then the same pods again (a watch event, a resync)
        for pod in pods:
            assert operator.handle_pod(pod).state == MISSED
    operator.events.wait_idle()
    about = sorted((e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"]) for e in posted)
    assert about == [("Pod", "redis-0", "MCPSidecarMissed"), ("Pod", "redis-1", "MCPSidecarMissed"),
                     ("Pod", "redis-2", "MCPSidecarMissed"), ("StatefulSet", "redis", "MCPSidecarMissed")]
    owner_event = next(e for e in posted if e["involvedObject"]["kind"] == "StatefulSet")
    assert owner_event["message"].startswith("pod redis-0 has no MCP sidecar")
    assert owner_event["source"] == {"component": "mcp-sidecar-operator"}  # what a restarted operator lists back
    # a new configuration judges every pod again (stale is relative to it), still without repeating
    operator.config = lambda: parse_config("backends: {redis: {image: 'mcp/redis:2'}}")
    assert operator.handle_pod(pods[0]).state == MISSED
    operator.events.wait_idle()
    assert len(posted) == 4


def test_audit_output_is_written_row_by_row_as_one_document():
    """The streamed JSON/YAML is exactly the document json.dumps / yaml.safe_dump would print."""
    import yaml

    for rows in ([], [audit_pod(injected_pod(), {}, CONFIG), audit_pod(labelled_pod(), {}, CONFIG)]):
        document = {"pods": [r.as_dict() for r in rows], "summary": summarize(rows)}
        assert render(rows, "json") == json.dumps(document, indent=2) + "\n"
        assert render(rows, "yaml") == yaml.safe_dump(document, sort_keys=False)
        assert json.loads(render(rows, "json")) == document
