"""A webhook outage on a real node: failurePolicy Ignore lets labelled pods start without the sidecar,
`mcp-sidecar audit` reports them missed, and the operator's healing brings them back injected.

1. the injector Deployment (the ``injector`` fixture's release) is scaled to 0; a server-side dry
   run of a labelled pod confirms the API server now admits it uninjected;
2. a labelled StatefulSet and a labelled Deployment start: their pods run 1/1 Ready, no sidecar;
3. `mcp-sidecar audit -n NS -o json` lists both as ``missed``; ``--fail-on missed`` exits 1;
4. `helm upgrade` with the fixture's values plus ``--set operator.healing=true`` (the chart passes
   ``--heal`` to `mcp-sidecar operator`, the chart's operator Deployment): the operator
   evicts the missed pods (one per heal interval, the rest at its next sweep), their controllers
   recreate them injected, 2/2 Ready; the audit says injected; Events MCPSidecarMissed/Healing.

The injector is restored exactly as the fixture installed it (its values: 2 replicas, healing off)
in ``finally``, whatever happened: other sessions on the node depend on it. This test breaks
injection for everyone while it runs (about a minute): run it sparingly.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time

import pytest

from tests.node.kube import (
    BACKEND_LABEL,
    CHART,
    REPO,
    WEBHOOK_NAME,
    container_names,
    describe,
    pods,
    ready_count,
    redis_pod_spec,
)

pytestmark = pytest.mark.slow

SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis"}, "type": "Opaque",
          "stringData": {"redis-password": "outage-password"}}


def _redis_template(app: str) -> dict:
    return {"metadata": {"labels": {"app.kubernetes.io/name": app, BACKEND_LABEL: "redis"}}, "spec": redis_pod_spec()}

WORKLOADS = [
    {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "redis"},
     "spec": {"serviceName": "redis", "replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "redis"}},
              "template": _redis_template("redis")}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cache"},
     "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "cache"}},
              "template": _redis_template("cache")}},
]
SELECTOR = "app.kubernetes.io/name in (redis,cache)"


def _helm_upgrade(injector, *extra: str) -> None:
    """`helm upgrade --wait` of the fixture's release with its values (+ ``extra``); retried while
    another session's `helm upgrade --install` of the same release holds Helm's release lock."""
    args = ("upgrade", injector.release, str(CHART), "-n", injector.namespace, "--wait", "--timeout", "5m",
            *injector.values, *extra)
    for attempt in range(10):
        done = injector.helm(*args, check=False)
        if done.returncode == 0:
            return
        if "another operation" not in done.stderr or attempt == 9:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        time.sleep(3)


def _last_revision(injector) -> tuple[int, float]:
    """(revision, seconds since it was written) of the release."""
    [last] = json.loads(injector.helm("history", injector.release, "-n", injector.namespace, "-o", "json",
                                      "--max", "1").stdout)
    updated = dt.datetime.fromisoformat(last["updated"][:19] + "+00:00")
    return last["revision"], (dt.datetime.now(dt.timezone.utc) - updated).total_seconds()


def _wait_quiet(cp, injector, quiet: float = 30, timeout: float = 300) -> int:
    """Other sessions on the node `helm upgrade --install` this release when they start (the
    ``injector`` fixture), which ends an outage or turns healing off: start once nobody did for
    ``quiet`` seconds. Returns the current revision."""
    return cp.wait_for(lambda: (lambda rev, age: rev if age >= quiet else None)(*_last_revision(injector)),
                       timeout, f"no `helm upgrade` of {injector.release} for {quiet:.0f}s", interval=3)


def _audit(cp, namespace: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv" / "bin" / "mcp-sidecar"), "audit", "-n", namespace, "-o", "json", *extra],
                          env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)}, capture_output=True, text=True,
                          timeout=60)


def _wait_or_raise(cp, cond, timeout: float, what: str):
    """cp.wait_for, except that an AssertionError raised by ``cond`` ends the wait at once."""
    failure: list[AssertionError] = []

    def check():
        try:
            return cond()
        except AssertionError as exc:
            failure.append(exc)
            return True

    result = cp.wait_for(check, timeout, what, interval=1)
    if failure:
        raise failure[0]
    return result


def _dry_run_injected(cp, namespace: str) -> bool:
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "outage-probe-", "labels": {BACKEND_LABEL: "redis"}},
             "spec": {"automountServiceAccountToken": False, "containers": [{"name": "redis", "image": "redis:7.4"}]}}
    created = json.loads(cp.kubectl("create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
                                    input=json.dumps(probe)).stdout)
    return "mcp-sidecar" in container_names(created)


def _serve_args(cp, injector) -> tuple[list[str], int]:
    """(the operator's args, the admission replicas): healing is a flag of the operator Deployment."""
    operator = cp.kubectl_json("get", "deployment", f"{injector.deployment}-operator", "-n", injector.namespace)
    deployment = cp.kubectl_json("get", "deployment", injector.deployment, "-n", injector.namespace)
    return operator["spec"]["template"]["spec"]["containers"][0]["args"], deployment["spec"]["replicas"]


def _admission_pods(cp, injector) -> list[dict]:
    """The admission Deployment's pods (the operator's `<release>-operator-...` pods are not)."""
    prefix, operator = f"{injector.deployment}-", f"{injector.deployment}-operator-"
    return [p for p in pods(cp, injector.namespace)
            if p["metadata"]["name"].startswith(prefix) and not p["metadata"]["name"].startswith(operator)]


def test_outage_pods_start_uninjected_audit_reports_missed_healing_injects(cp, injector, namespace):
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    args, replicas = _serve_args(cp, injector)
    assert "--no-heal" in args and replicas == 2, (args, replicas)  # the fixture's installation
    cp.apply(SECRET, "-n", namespace)
    outage_started = None
    try:
        # ---- 1. outage: no injector replica answers; failurePolicy Ignore admits labelled pods as they are
        [hook] = cp.kubectl_json("get", "mutatingwebhookconfiguration",
                                 f"{injector.deployment}-{injector.namespace}")["webhooks"]
        assert hook["failurePolicy"] == "Ignore"
        revision = _wait_quiet(cp, injector)
        outage_started = time.monotonic()
        cp.kubectl("scale", "deployment", injector.deployment, "-n", injector.namespace, "--replicas=0")
        cp.wait_for(lambda: not _dry_run_injected(cp, namespace), 60,
                    "a dry-run labelled pod to be admitted uninjected (webhook unreachable)", interval=1)
        # A terminating admission pod still serves through its drain, and the API server's kept-alive
        # connection can reach it after one dry-run already failed: the outage starts once it is gone.
        cp.wait_for(lambda: not _admission_pods(cp, injector), 90, "the admission pods to be gone", interval=1)
        timings["webhook unreachable"] = time.monotonic() - outage_started

        # ---- 2. the labelled workloads' pods start without the sidecar, 1/1 Ready
        cp.apply(WORKLOADS, "-n", namespace)

        def started_uninjected() -> list[dict] | None:
            items = [p for p in pods(cp, namespace, SELECTOR) if not p["metadata"].get("deletionTimestamp")]
            if any("mcp-sidecar" in container_names(p) for p in items):
                raise AssertionError(f"a pod was injected during the outage (another session's `helm upgrade` of "
                                     f"{injector.release}? revision {_last_revision(injector)[0]} after {revision})")
            return items if len(items) == 2 and all(ready_count(p) == (1, 1) for p in items) else None

        missed = _wait_or_raise(cp, started_uninjected, 180, "both labelled pods 1/1 Ready without the sidecar")
        timings["pods 1/1 Ready uninjected"] = time.monotonic() - outage_started
        for p in missed:
            assert container_names(p) == ["redis"], container_names(p)
            assert "mcp-sidecar.dox/status" not in p["metadata"].get("annotations", {})
            assert p["status"]["phase"] == "Running"

        # ---- 3. the audit reports them missed
        done = _audit(cp, namespace)
        assert done.returncode == 0, done.stderr
        rows = {r["pod"]: r for r in json.loads(done.stdout)["pods"]}
        assert set(rows) == {p["metadata"]["name"] for p in missed}, rows
        for r in rows.values():
            assert (r["state"], r["backend"]) == ("missed", "redis"), r
            assert "webhook" in r["reason"], r
        assert {r["owner"] for r in rows.values()} == {"StatefulSet/redis", "Deployment/cache"}
        assert "2 missed" in json.loads(done.stdout)["summary"]
        failing = _audit(cp, namespace, "--fail-on", "missed")
        assert failing.returncode == 1 and "2 pod(s) match --fail-on missed" in failing.stderr, failing

        # (Another session's `helm upgrade` may have ended the outage by now: the pods above already
        # started uninjected and are what healing must fix, so that changes nothing below.)

        # ---- 4. the injector back, with healing on
        _helm_upgrade(injector, "--set", "operator.healing=true")
        args, replicas = _serve_args(cp, injector)
        assert "--heal" in args and replicas == 2, (args, replicas)
        cp.wait_for_webhook(WEBHOOK_NAME, namespace=namespace, timeout=60)
        timings["outage (scale 0 -> injector answering again)"] = time.monotonic() - outage_started
        outage_started = None
        healing_started = time.monotonic()

        old = {p["metadata"]["uid"] for p in missed}

        reenabled = 0

        def healed() -> list[dict] | None:
            nonlocal reenabled
            if "--heal" not in _serve_args(cp, injector)[0] and reenabled < 2:
                # another session's fixture upgraded the release back to its values (healing off)
                print(f"\nhealing was turned off by another `helm upgrade` (revision {_last_revision(injector)[0]}): "
                      "enabling it again", flush=True)
                reenabled += 1
                _helm_upgrade(injector, "--set", "operator.healing=true")
            items = [p for p in pods(cp, namespace, SELECTOR) if not p["metadata"].get("deletionTimestamp")]
            if len(items) != 2 or any(p["metadata"]["uid"] in old or ready_count(p) != (2, 2) for p in items):
                return None
            return items

        try:
            injected = cp.wait_for(healed, 240, "the operator to evict both missed pods and them to come back 2/2",
                                   interval=2)
        except Exception as exc:
            logs = cp.kubectl("logs", "-n", injector.namespace, f"deployment/{injector.deployment}-operator", "--tail=40",
                              check=False).stdout
            raise AssertionError(f"{exc}\n{describe(cp, namespace, SELECTOR)}\n{logs}") from None
        timings["healing (both pods 2/2)"] = time.monotonic() - healing_started
        for p in injected:
            assert container_names(p) == ["redis", "mcp-sidecar"], container_names(p)
            assert json.loads(p["metadata"]["annotations"]["mcp-sidecar.dox/status"])["backend"] == "redis"
        assert sorted(p["metadata"]["name"].split("-")[0] for p in injected) == ["cache", "redis"]

        events = cp.kubectl_json("get", "events", "-n", namespace)["items"]
        reasons = {(e["involvedObject"]["name"], e["reason"]) for e in events}
        evicted = sorted(dt.datetime.fromisoformat(e["firstTimestamp"].replace("Z", "+00:00"))
                         for e in events if e["reason"] == "MCPSidecarHealing")
        if evicted:
            timings["between the two evictions"] = (evicted[-1] - evicted[0]).total_seconds()
        for p in missed:
            name = p["metadata"]["name"]
            assert (name, "MCPSidecarMissed") in reasons and (name, "MCPSidecarHealing") in reasons, sorted(reasons)
        assert ("redis", "MCPSidecarMissed") in reasons  # also announced on the StatefulSet
        done = _audit(cp, namespace, "--fail-on", "missed,unready")
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert {r["state"] for r in json.loads(done.stdout)["pods"]} == {"injected"}
    finally:
        # ---- restore the injector as the fixture installed it: its values, 2 replicas, healing off
        restore_started = time.monotonic()
        restore_error = None
        try:
            _helm_upgrade(injector)
        except AssertionError as exc:
            restore_error = exc
        args, replicas = _serve_args(cp, injector)
        if replicas != 2:  # helm did not put the replicas back: do it, then fail below
            cp.kubectl("scale", "deployment", injector.deployment, "-n", injector.namespace, "--replicas=2")
            cp.kubectl("rollout", "status", f"deployment/{injector.deployment}", "-n", injector.namespace,
                       "--timeout=180s", timeout=200)
        if outage_started is not None:
            timings["outage (scale 0 -> restored after a failure)"] = time.monotonic() - outage_started
        if restore_error is not None:
            raise restore_error
        assert "--no-heal" in args and replicas == 2, (args, replicas)
        cp.wait_for_webhook(WEBHOOK_NAME, namespace=namespace, timeout=60)
        timings["restore (helm upgrade, healing off)"] = time.monotonic() - restore_started
        timings["total"] = time.monotonic() - t0
        print("\n[timing] " + "; ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
