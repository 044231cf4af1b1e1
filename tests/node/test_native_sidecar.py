"""Native sidecar mode on a real kubelet: the sidecar as the first initContainer with restartPolicy: Always.

- A labelled Job (restartPolicy Never) gets the native sidecar without asking (nativeSidecar: auto),
  serves MCP while the Job's Redis runs, and does not keep the Job alive: once the main container
  exits 0 the kubelet stops the sidecar, the pod Succeeds and the Job is Complete. The same Job with
  `mcp-sidecar.dox/native: "false"` (a regular sidecar) never completes: that is what native mode fixes.
- With `mcp-sidecar.dox/native: "true"` on a long-running pod, the kubelet starts the sidecar before it
  even creates the datastore container (host process start time vs containerd's creation time).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.node.kube import (BACKEND_LABEL, auth_headers, describe, exec_in, mcp_calls, port_forward, ready_count,
                             wait_pods_ready)

pytestmark = pytest.mark.slow

SIDECAR = "mcp-sidecar"
PASSWORD = "native-password"
NATIVE = "mcp-sidecar.dox/native"

REDIS_ENV = [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "redis-password"}}}]
REDIS_PORTS = [{"name": "redis", "containerPort": 6379}]
REDIS_SC = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
POD_SC = {"runAsNonRoot": True, "runAsUser": 999, "seccompProfile": {"type": "RuntimeDefault"}}

# The Job's work: a Redis that serves until someone sets job:done, then shuts down; exit 0.
JOB_SCRIPT = """
redis-server --requirepass "$REDIS_PASSWORD" --save '' --appendonly no --protected-mode no &
cli() { redis-cli -a "$REDIS_PASSWORD" --no-auth-warning "$@"; }
until [ "$(cli GET job:done 2>/dev/null)" = yes ]; do sleep 0.5; done
cli SHUTDOWN NOSAVE
wait
exit 0
"""


def _secret() -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis"}, "type": "Opaque",
            "stringData": {"redis-password": PASSWORD}}


def _job(name: str, annotations: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {BACKEND_LABEL: "redis", "job": name}, "annotations": dict(annotations or {})},
                "spec": {
                    "restartPolicy": "Never", "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 5, "securityContext": POD_SC,
                    "containers": [{"name": "redis", "image": "redis:7.4", "command": ["sh", "-c", JOB_SCRIPT],
                                    "env": REDIS_ENV, "ports": REDIS_PORTS, "securityContext": REDIS_SC}],
                },
            },
        },
    }


def _job_pod(cp, namespace: str, job: str) -> dict:
    [pod] = cp.kubectl_json("get", "pods", "-n", namespace, "-l", f"job={job}")["items"]
    return pod


def _conditions(obj: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _running_pod(cp, namespace: str, job: str) -> dict | None:
    pods = cp.kubectl_json("get", "pods", "-n", namespace, "-l", f"job={job}")["items"]
    if len(pods) == 1 and ready_count(pods[0]) == (2, 2):
        return pods[0]
    return None


def test_job_with_native_sidecar_completes(cp, injector, namespace):
    cp.apply(_secret(), "-n", namespace)
    # the same Job twice: nativeSidecar auto (-> native for restartPolicy Never), and forced regular
    cp.apply([_job("native"), _job("regular", {NATIVE: "false"})], "-n", namespace)
    native = cp.wait_for(lambda: _running_pod(cp, namespace, "native"), 180, "the native Job pod 2/2",
                         interval=1)
    regular = cp.wait_for(lambda: _running_pod(cp, namespace, "regular"), 180, "the regular Job pod 2/2",
                          interval=1)

    # auto chose native for the Job pod: first initContainer, restartPolicy Always, no regular container
    first_init = native["spec"]["initContainers"][0]
    assert first_init["name"] == SIDECAR and first_init["restartPolicy"] == "Always", first_init
    assert [c["name"] for c in native["spec"]["containers"]] == ["redis"]
    assert json.loads(native["metadata"]["annotations"]["mcp-sidecar.dox/status"])["native"] is True
    assert SIDECAR in [c["name"] for c in regular["spec"]["containers"]]
    assert not regular["spec"].get("initContainers")

    # the sidecar really serves the Job's Redis while the Job runs
    name = native["metadata"]["name"]
    exec_in(cp, namespace, name, "redis", "sh", "-c",
            'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning SET job:progress 42')
    with port_forward(cp, namespace, f"pod/{name}", 9000) as port:
        out = mcp_calls(f"http://127.0.0.1:{port}/mcp", ("get", {"key": "job:progress"}), headers=auth_headers(cp, namespace))
    assert out["get"]["structured"]["value"] == "42", out

    # the Job's work ends: its main container exits 0 (both Jobs)
    for pod in (native, regular):
        exec_in(cp, namespace, pod["metadata"]["name"], "redis", "sh", "-c",
                'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning SET job:done yes')
    t0 = time.monotonic()
    job = cp.wait_for(lambda: (lambda j: j if _conditions(j).get("Complete") == "True" else None)(
        cp.kubectl_json("get", "job", "-n", namespace, "native")), 90, "the native Job Complete", interval=0.5)
    completed_after = time.monotonic() - t0
    assert job["status"].get("succeeded") == 1 and not job["status"].get("failed"), job["status"]

    pod = _job_pod(cp, namespace, "native")
    assert pod["status"]["phase"] == "Succeeded", describe(cp, namespace)
    [main] = pod["status"]["containerStatuses"]
    [side] = [s for s in pod["status"]["initContainerStatuses"] if s["name"] == SIDECAR]
    assert main["state"]["terminated"]["exitCode"] == 0, main
    # the kubelet stopped the sidecar after the main container had finished, and never restarted it
    assert "terminated" in side["state"] and side["restartCount"] == 0, side
    assert _ts(side["state"]["terminated"]["finishedAt"]) >= _ts(main["state"]["terminated"]["finishedAt"])
    print(f"\n[native job] Complete {completed_after:.1f}s after the work ended; sidecar exit code "
          f"{side['state']['terminated']['exitCode']} ({side['state']['terminated'].get('reason')})")

    # control: with a regular sidecar the same Job does not complete (the sidecar keeps its pod running)
    def main_exited() -> dict | None:
        p = _job_pod(cp, namespace, "regular")
        st = next(s for s in p["status"]["containerStatuses"] if s["name"] == "redis")
        return p if "terminated" in st["state"] else None

    cp.wait_for(main_exited, 60, "the regular Job's main container to exit", interval=0.5)
    time.sleep(max(0.0, completed_after + 15 - (time.monotonic() - t0)))
    stuck = cp.kubectl_json("get", "job", "-n", namespace, "regular")
    pod = _job_pod(cp, namespace, "regular")
    assert _conditions(stuck).get("Complete") != "True" and not stuck["status"].get("succeeded"), stuck["status"]
    assert pod["status"]["phase"] == "Running", pod["status"]["phase"]
    side = next(s for s in pod["status"]["containerStatuses"] if s["name"] == SIDECAR)
    assert "running" in side["state"], side


def _proc_start(pid: int) -> datetime:
    """Wall-clock start of a host process (10 ms resolution): /proc/PID/stat starttime is in clock
    ticks of CLOCK_BOOTTIME; converted with the current BOOTTIME-to-wall-clock offset (not /proc/stat
    btime, which is rounded to a second)."""
    stat = open(f"/proc/{pid}/stat").read()
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    offset = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return datetime.fromtimestamp(offset + ticks / os.sysconf("SC_CLK_TCK"), tz=timezone.utc)


def _containerd(node, container_id: str) -> tuple[datetime, int]:
    """(containerd's creation time of the container, host PID of its task)."""
    cid = container_id.removeprefix("containerd://")
    info = json.loads(node.ctr("containers", "info", cid).stdout)
    created = info["CreatedAt"]
    # RFC 3339 with nanoseconds: keep microseconds for datetime
    head, _, frac = created.rstrip("Z").partition(".")
    created_at = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
    pid = next(int(line.split()[1]) for line in node.ctr("tasks", "ls").stdout.splitlines()[1:]
               if line.split()[0] == cid)
    return created_at, pid


def test_native_sidecar_starts_before_the_datastore(cp, node, injector, namespace):
    cp.apply(_secret(), "-n", namespace)
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "redis", "labels": {BACKEND_LABEL: "redis", "app": "redis"},
                     "annotations": {NATIVE: "true"}},
        "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 2, "securityContext": POD_SC,
                 "containers": [{"name": "redis", "image": "redis:7.4", "args": ["--requirepass", "$(REDIS_PASSWORD)"],
                                 "env": REDIS_ENV, "ports": REDIS_PORTS, "securityContext": REDIS_SC}]},
    }
    cp.apply(pod, "-n", namespace)
    [pod] = wait_pods_ready(cp, namespace, "app=redis", containers=2, timeout=180)

    # the annotation turned the sidecar native on a pod that would otherwise get a regular one
    assert pod["spec"]["initContainers"][0]["name"] == SIDECAR
    assert pod["spec"]["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["redis"]
    [side] = pod["status"]["initContainerStatuses"]
    [main] = pod["status"]["containerStatuses"]
    assert side["name"] == SIDECAR and side["started"] and side["ready"] and "running" in side["state"], side
    assert main["restartCount"] == 0 and side["restartCount"] == 0

    # the kubelet's order, as the API shows it (second resolution) ...
    assert _ts(side["state"]["running"]["startedAt"]) <= _ts(main["state"]["running"]["startedAt"])
    # ... and as the node shows it: the sidecar's process was running before containerd was even
    # asked to create the datastore container
    side_created, side_pid = _containerd(node, side["containerID"])
    main_created, main_pid = _containerd(node, main["containerID"])
    side_started, main_started = _proc_start(side_pid), _proc_start(main_pid)
    tick = timedelta(seconds=1 / os.sysconf("SC_CLK_TCK"))  # a start time may read up to one tick early
    order = {"sidecar created": side_created, "sidecar process": side_started,
             "datastore created": main_created, "datastore process": main_started}
    assert side_started < main_started and side_created < main_created, order
    assert side_started + tick <= main_created, order  # the sidecar ran before the datastore existed
    assert side_created < side_started + tick and main_created < main_started + tick, order  # sane clocks
    print(f"\n[native order] sidecar process started {(main_created - side_started).total_seconds() * 1000:.0f} ms "
          f"before the datastore container was created; datastore process "
          f"{(main_started - side_started).total_seconds() * 1000:.0f} ms after the sidecar's")

    # and it serves, as a native sidecar, the Redis started after it
    exec_in(cp, namespace, "redis", "redis", "sh", "-c",
            'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning SET native:key ordered')
    with port_forward(cp, namespace, "pod/redis", 9000) as port:
        out = mcp_calls(f"http://127.0.0.1:{port}/mcp", ("get", {"key": "native:key"}), headers=auth_headers(cp, namespace))
    assert out["get"]["structured"]["value"] == "ordered", out
