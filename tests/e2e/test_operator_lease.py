"""One active operator among replicas: the Lease holder acts, a successor takes over (issue 5).

Its own module on purpose: the operator in test_operator.py's module fixture watches every
namespace and would act on this test's workload too.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.e2e.test_operator import BACKEND, workload

pytestmark = pytest.mark.slow


def test_only_the_lease_holder_acts_and_a_successor_takes_over(control_plane, namespace, tmp_path):
    cp = control_plane
    lease_name = f"op-{namespace}"

    def start():
        return subprocess.Popen(
            [sys.executable, "-m", "webhook.cli", "operator", "--kubeconfig", str(cp.kubeconfig), "--leader-election-namespace", namespace,
             "--no-companion-service", "--resync-seconds", "3600"],
            stdout=open(tmp_path / f"op-{time.monotonic_ns()}.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    env_lease = lambda: cp.kubectl_json("get", "lease", "mcp-sidecar-injector-operator", "-n", namespace)  # noqa: E731
    first, second = start(), start()
    try:
        holder = cp.wait_for(lambda: env_lease()["spec"].get("holderIdentity"), 30, f"a leader ({lease_name})")
        cp.apply(workload("StatefulSet", "solo", namespace))
        cp.kubectl("label", "statefulset", "solo", "-n", namespace, f"{BACKEND}=redis")
        cp.wait_for(lambda: [e for e in cp.kubectl_json("get", "events", "-n", namespace)["items"] if e["reason"] == "MCPLabelPropagated"], 30, "propagation")
        time.sleep(3)
        propagated = [e for e in cp.kubectl_json("get", "events", "-n", namespace)["items"] if e["reason"] == "MCPLabelPropagated"]
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(tmp_path.glob("op-*.log")))
        assert len(propagated) == 1, f"two operators acted: {[(e['metadata']['name'], e['firstTimestamp']) for e in propagated]}\n{logs}"
        # stop the leader; the other takes over (a clean stop releases the Lease at once)
        leader, survivor = (first, second) if f"_{first.pid}_" in holder else (second, first)
        assert f"_{leader.pid}_" in holder
        leader.terminate()
        assert leader.wait(20) == 0
        cp.wait_for(lambda: f"_{survivor.pid}_" in (env_lease()["spec"].get("holderIdentity") or ""), 20, "the survivor to lead")
        assert survivor.poll() is None
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
