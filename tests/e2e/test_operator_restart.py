"""A restarted operator (or a new leader) repeats no Event, and reads only labelled pods (issue 12).

Its own module: the operator of test_operator.py's module fixture watches every namespace and would
announce this test's pods too. No webhook is registered here, so a labelled pod is missed.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_operator import BACKEND, pods, workload
from tests.support.operator_process import OperatorProcess

pytestmark = pytest.mark.slow


def missed_events(cp, namespace):
    return sorted((e["involvedObject"]["kind"], e["involvedObject"]["name"])
                  for e in cp.kubectl_json("get", "events", "-n", namespace)["items"] if e["reason"] == "MCPSidecarMissed")


def test_a_restarted_operator_announces_nothing_twice(control_plane, namespace, tmp_path):
    cp = control_plane
    labelled = workload("Deployment", "cache", namespace, {BACKEND: "redis"})
    labelled["spec"]["replicas"] = 3
    cp.apply([labelled, workload("Deployment", "plain", namespace)])
    cp.wait_for(lambda: len(pods(cp, namespace, "app in (cache,plain)")) == 4, 60, "4 pods")

    def run(tag):
        workdir = tmp_path / tag
        workdir.mkdir()
        return OperatorProcess(workdir, cp.kubeconfig,
                               "--namespace", namespace, "--leader-election-namespace", namespace,
                               "--no-companion-service", "--resync-seconds", "2")

    first = run("first")
    try:
        # each pod once, and their ReplicaSet once (not once per pod)
        events = cp.wait_for(lambda: (e := missed_events(cp, namespace)) and len(e) >= 4 and e, 60, "the Missed Events")
        time.sleep(5)  # two resyncs
        assert missed_events(cp, namespace) == events
        assert [kind for kind, _ in events].count("Pod") == 3 and [kind for kind, _ in events].count("ReplicaSet") == 1, events
        # only the labelled pods were read: the unlabelled one never reaches the operator
        assert "start-up pass: 3 labelled pods" in first.log(), first.log()[-3000:]
    finally:
        first.stop()

    second = run("second")
    try:
        cp.wait_for(lambda: "start-up pass: 3 labelled pods" in second.log(), 60, "the second start-up pass")
        time.sleep(5)  # two resyncs
        log = second.log()
        assert "3 pods already announced" in log, log[-3000:]
        assert missed_events(cp, namespace) == events, "the restarted operator announced again"
    finally:
        second.stop()
