"""The seed's failure-isolation table on real pods: a failing sidecar never takes the datastore down,
and a failing datastore never takes the sidecar down.

| failure                               | expected                                                      |
|---------------------------------------|---------------------------------------------------------------|
| the sidecar process crashes (SIGKILL) | kubelet restarts only the sidecar; Redis keeps serving         |
| the sidecar image cannot be pulled    | Redis runs and is Ready; the pod is 1/2, the sidecar waiting  |
| ... with a native sidecar             | Redis never starts (init-container ordering): 0/2             |
| Redis stops                           | the sidecar stays up, /health says degraded, recovers alone   |

| the sidecar hangs (SIGSTOP)           | marked unready, then restarted by its liveness probe; Redis untouched |

The hang row failed with the seed's tcpSocket probes: the kernel completes TCP handshakes on the
listening socket's backlog for a stopped process (measured: still Ready, restartCount 0 after 130 s).
The injected probes now ask GET /livez. The crash is a real one: the sidecar's main process is killed from the host (its PID from the node's
containerd task list), not through the API. Timings measured on the shared 2-core node are printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from tests.cluster.controlplane import BIN_DIR
from tests.node.kube import (
    BACKEND_LABEL,
    container_names,
    describe,
    exec_in,
    auth_headers,
    mcp_calls,
    pods,
    port_forward,
    ready_count,
    redis_pod_spec,
    redis_secret,
    wait_pods_ready,
)
from tests.support.processes import stop_group

pytestmark = pytest.mark.slow

SIDECAR = "mcp-sidecar"
PULL_FAILED = ("ErrImagePull", "ImagePullBackOff")
PASSWORD = "isolation-password"


# ---- module-local helpers -----------------------------------------------------------------------


def _redis_pod(name: str, annotations: dict[str, str] | None = None) -> dict:
    """A plain Redis pod (password from a Secret, as deploy/examples/redis-statefulset.yaml), labelled."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {BACKEND_LABEL: "redis", "app": name},
                     "annotations": dict(annotations or {})},
        "spec": redis_pod_spec(),
    }


def _start(cp, namespace: str, pod: dict) -> None:
    cp.apply(redis_secret(PASSWORD), "-n", namespace)
    cp.apply(pod, "-n", namespace)


def _pod(cp, namespace: str, name: str) -> dict:
    return cp.kubectl_json("get", "pod", "-n", namespace, name)


def _status(pod: dict, container: str) -> dict:
    return next(s for s in pod["status"].get("containerStatuses", []) if s["name"] == container)


def _redis_cli(cp, namespace: str, pod: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """redis-cli inside the datastore container, authenticated with the pod's own password env."""
    quoted = " ".join(f"'{a}'" for a in args)
    return exec_in(cp, namespace, pod, "redis", "sh", "-c",
                   f'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning {quoted}', check=check)


HEALTH_ONCE = """
import json, urllib.request, urllib.error
try:
    with urllib.request.urlopen("http://127.0.0.1:9000/health", timeout=5) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""

# Polls /health from inside the sidecar (its image has python3, no curl) and streams one JSON line
# per answer: [seconds since start, HTTP status, body].
HEALTH_WATCH = """
import json, sys, time, urllib.request, urllib.error
t0 = time.monotonic()
while time.monotonic() - t0 < float(sys.argv[1]):
    try:
        with urllib.request.urlopen("http://127.0.0.1:9000/health", timeout=5) as r:
            code, body = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        code, body = e.code, json.loads(e.read())
    except Exception as e:
        code, body = 0, {"error": repr(e)}
    print(json.dumps([round(time.monotonic() - t0, 2), code, body]), flush=True)
    time.sleep(0.25)
"""


def _health(cp, namespace: str, pod: str) -> tuple[int, dict]:
    code, _, body = exec_in(cp, namespace, pod, SIDECAR, "python3", "-c", HEALTH_ONCE).stdout.strip().partition(" ")
    return int(code), json.loads(body)


def _host_pid(node, container_id: str) -> int:
    """Host PID of a container's main process, from the node's containerd task list (``ctr tasks ls``)."""
    cid = container_id.removeprefix("containerd://")
    for line in node.ctr("tasks", "ls").stdout.splitlines()[1:]:
        task, pid, state = line.split()[:3]
        if task == cid:
            assert state == "RUNNING", line
            return int(pid)
    raise AssertionError(f"container {cid} has no task on the node")


# ---- a. the sidecar crashes ---------------------------------------------------------------------


def test_sidecar_crash_restarts_only_the_sidecar(cp, node, injector, namespace):
    _start(cp, namespace, _redis_pod("redis"))
    [pod] = wait_pods_ready(cp, namespace, "app=redis", containers=2, timeout=180)
    assert container_names(pod) == ["redis", SIDECAR], describe(cp, namespace)
    redis_before, sidecar_before = _status(pod, "redis"), _status(pod, SIDECAR)
    assert redis_before["restartCount"] == 0 and sidecar_before["restartCount"] == 0
    assert _redis_cli(cp, namespace, "redis", "SET", "isolation:key", "kept").stdout.strip() == "OK"

    # the sidecar's main process, as the host sees it
    pid = _host_pid(node, sidecar_before["containerID"])
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    assert any(part.endswith(b"mcp-redis") for part in cmdline), cmdline
    assert os.stat(f"/proc/{pid}").st_uid == 1000  # uid 1000 on the host too (no user namespace)

    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    seen: dict[str, float] = {}
    answers = 0
    deadline = t0 + 90
    while time.monotonic() < deadline:
        # the datastore keeps serving the whole time
        assert _redis_cli(cp, namespace, "redis", "GET", "isolation:key").stdout.strip() == "kept"
        answers += 1
        now = _pod(cp, namespace, "redis")
        side = _status(now, SIDECAR)
        if "terminated" in side["state"] or side.get("lastState", {}).get("terminated"):
            seen.setdefault("exit seen", time.monotonic() - t0)
        if side["restartCount"] >= 1 and "running" in side["state"]:
            seen.setdefault("restarted", time.monotonic() - t0)
        if side["restartCount"] >= 1 and side["ready"] and ready_count(now) == (2, 2):
            seen.setdefault("2/2 again", time.monotonic() - t0)
            break
        time.sleep(0.3)
    print(f"\n[crash] SIGKILL -> {', '.join(f'{k} {v:.1f}s' for k, v in seen.items())}; "
          f"{answers} Redis GETs answered meanwhile")
    assert "2/2 again" in seen, f"sidecar not back after 90s: {seen}\n{describe(cp, namespace)}"

    after = _pod(cp, namespace, "redis")
    side, redis = _status(after, SIDECAR), _status(after, "redis")
    assert side["restartCount"] == 1, side
    assert side["lastState"]["terminated"]["exitCode"] == 137, side["lastState"]  # killed by SIGKILL
    assert side["containerID"] != sidecar_before["containerID"]
    # the datastore container was never touched: same container, never restarted, same start time
    assert redis["restartCount"] == 0, redis
    assert redis["containerID"] == redis_before["containerID"]
    assert redis["state"]["running"]["startedAt"] == redis_before["state"]["running"]["startedAt"]
    assert _redis_cli(cp, namespace, "redis", "PING").stdout.strip() == "PONG"

    # the restarted sidecar serves MCP again, against the same (untouched) data
    with port_forward(cp, namespace, "pod/redis", 9000) as port:
        out = mcp_calls(f"http://127.0.0.1:{port}/mcp", ("get", {"key": "isolation:key"}), headers=auth_headers(cp, namespace))
    assert out["get"]["structured"]["value"] == "kept", out


def test_hung_sidecar_is_marked_unready_then_restarted_by_its_liveness_probe(cp, node, injector, namespace):
    _start(cp, namespace, _redis_pod("redis"))
    [pod] = wait_pods_ready(cp, namespace, "app=redis", containers=2, timeout=180)
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == SIDECAR)
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/livez", sidecar["livenessProbe"]
    redis_before, sidecar_before = _status(pod, "redis"), _status(pod, SIDECAR)
    pid = _host_pid(node, sidecar_before["containerID"])

    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)  # alive, listening, answering nothing
    seen: dict[str, float] = {}
    deadline = t0 + 150
    try:
        while time.monotonic() < deadline:
            now = _pod(cp, namespace, "redis")
            side = _status(now, SIDECAR)
            if not side["ready"] and side["restartCount"] == 0:
                seen.setdefault("unready", time.monotonic() - t0)
            if side["restartCount"] >= 1:
                seen.setdefault("restarted", time.monotonic() - t0)
                if side["ready"]:
                    seen.setdefault("2/2 again", time.monotonic() - t0)
                    break
            time.sleep(1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    print(f"\n[hang] SIGSTOP -> {', '.join(f'{k} {v:.1f}s' for k, v in seen.items())}")
    assert "unready" in seen and "2/2 again" in seen, f"{seen}\n{describe(cp, namespace)}"
    events = cp.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=redis").stdout
    assert "Liveness probe failed" in events and "will be restarted" in events, events
    redis = _status(_pod(cp, namespace, "redis"), "redis")
    assert redis["restartCount"] == 0 and redis["containerID"] == redis_before["containerID"], redis
    assert _redis_cli(cp, namespace, "redis", "PING").stdout.strip() == "PONG"


# ---- b. the sidecar image cannot be pulled ------------------------------------------------------


def test_missing_sidecar_image_leaves_the_datastore_running(cp, injector, namespace):
    image = "mcp/redis:does-not-exist"
    _start(cp, namespace, _redis_pod("redis", {"mcp-sidecar.dox/image": image}))

    def stuck() -> dict | None:
        pod = _pod(cp, namespace, "redis")
        statuses = {s["name"]: s for s in pod["status"].get("containerStatuses", [])}
        side, redis = statuses.get(SIDECAR), statuses.get("redis")
        if not side or not redis or not redis["ready"]:
            return None
        if side["state"].get("waiting", {}).get("reason") in PULL_FAILED:
            return pod
        return None

    pod = cp.wait_for(stuck, 120, "Redis Ready and the sidecar waiting on its image", interval=1)
    # the webhook did inject the overridden image (not skipped: the sidecar is there, with that image)
    sidecar_spec = next(c for c in pod["spec"]["containers"] if c["name"] == SIDECAR)
    assert sidecar_spec["image"] == image
    assert json.loads(pod["metadata"]["annotations"]["mcp-sidecar.dox/status"])["image"] == image

    # let the kubelet retry the pull a few times: the datastore is never affected
    time.sleep(15)
    pod = _pod(cp, namespace, "redis")
    side, redis = _status(pod, SIDECAR), _status(pod, "redis")
    assert ready_count(pod) == (1, 2), describe(cp, namespace)
    # (the pod phase stays Pending while any container has never started: Kubernetes semantics)
    assert side["state"]["waiting"]["reason"] in PULL_FAILED, side
    assert image in side["state"]["waiting"].get("message", image)
    assert not side["ready"] and side["restartCount"] == 0
    assert redis["ready"] and "running" in redis["state"] and redis["restartCount"] == 0, redis
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["ContainersReady"] == "False" and conditions["Ready"] == "False", conditions
    # ... and serves
    assert _redis_cli(cp, namespace, "redis", "SET", "k", "v").stdout.strip() == "OK"
    assert _redis_cli(cp, namespace, "redis", "GET", "k").stdout.strip() == "v"
    events = cp.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=redis").stdout
    assert "Failed to pull image" in events, events


def test_missing_native_sidecar_image_blocks_the_datastore(cp, injector, namespace):
    """The limit of the table: a *native* sidecar is an init container, so the kubelet does not
    create the datastore container until the sidecar has started. An unpullable sidecar image then
    keeps Redis from starting at all (pod 0/2, Init:ImagePullBackOff). This is Kubernetes semantics,
    not a bug of the webhook, but it is why native mode is not the default for long-running pods
    (``nativeSidecar: auto`` only picks it for restartPolicy Never/OnFailure pods)."""
    image = "mcp/redis:does-not-exist"
    _start(cp, namespace, _redis_pod("redis", {"mcp-sidecar.dox/image": image, "mcp-sidecar.dox/native": "true"}))

    def stuck() -> dict | None:
        pod = _pod(cp, namespace, "redis")
        inits = {s["name"]: s for s in pod["status"].get("initContainerStatuses", [])}
        side = inits.get(SIDECAR)
        return pod if side and side["state"].get("waiting", {}).get("reason") in PULL_FAILED else None

    pod = cp.wait_for(stuck, 120, "the native sidecar waiting on its image", interval=1)
    assert pod["spec"]["initContainers"][0]["name"] == SIDECAR
    time.sleep(15)
    pod = _pod(cp, namespace, "redis")
    [side] = pod["status"]["initContainerStatuses"]
    redis = _status(pod, "redis")
    assert side["state"]["waiting"]["reason"] in PULL_FAILED, side
    assert redis["state"] == {"waiting": {"reason": "PodInitializing"}} and not redis.get("containerID"), redis
    assert ready_count(pod) == (0, 2)
    assert _redis_cli(cp, namespace, "redis", "PING", check=False).returncode != 0


# ---- c. the datastore stops ---------------------------------------------------------------------


def _watch_health(cp, namespace: str, pod: str, seconds: float) -> tuple[subprocess.Popen, "queue.Queue"]:
    proc = subprocess.Popen(
        [str(BIN_DIR / "kubectl"), f"--kubeconfig={cp.kubeconfig}", "exec", "-n", namespace, pod, "-c", SIDECAR,
         "--", "python3", "-c", HEALTH_WATCH, str(seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            if line.startswith("["):
                lines.put(json.loads(line))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def _shutdown_redis(cp, namespace: str, pod: str) -> None:
    # SHUTDOWN closes the connection without a reply, so redis-cli's exit status carries no meaning
    _redis_cli(cp, namespace, pod, "SHUTDOWN", "NOSAVE", check=False)


def test_datastore_outage_degrades_then_recovers_without_restarting_the_sidecar(cp, injector, namespace):
    _start(cp, namespace, _redis_pod("redis"))
    [pod] = wait_pods_ready(cp, namespace, "app=redis", containers=2, timeout=180)
    sidecar_before = _status(pod, SIDECAR)
    code, body = _health(cp, namespace, "redis")
    assert (code, body["status"], body["reachable"]) == (200, "ok", True), body

    # First stop: the kubelet restarts Redis at once (a sub-second gap). The second stop within
    # the back-off window waits ~10 s (CrashLoopBackOff): a real, observable outage.
    _shutdown_redis(cp, namespace, "redis")

    def redis_back() -> bool:
        redis = _status(_pod(cp, namespace, "redis"), "redis")
        return redis["restartCount"] == 1 and redis["ready"]

    cp.wait_for(redis_back, 60, "Redis restarted once", interval=0.5)
    cp.wait_for(lambda: _health(cp, namespace, "redis")[0] == 200, 30, "/health ok again")

    watch, answers = _watch_health(cp, namespace, "redis", 45)
    try:
        first = answers.get(timeout=30)
        assert first[1] == 200, first
        with port_forward(cp, namespace, "pod/redis", 9000) as port:
            t_stop = time.monotonic()
            _shutdown_redis(cp, namespace, "redis")
            # /health turns degraded (HTTP 503), with the reason
            while (row := answers.get(timeout=30)) and row[1] == 200:
                pass
            degraded_after = time.monotonic() - t_stop
            assert row is not None and row[1] == 503, row
            assert row[2]["status"] == "degraded" and row[2]["reachable"] is False, row
            assert "unreachable" in row[2]["last_error"] and "6379" in row[2]["last_error"], row
            # an MCP call during the outage fails cleanly: an error result, not a dead server
            out = mcp_calls(f"http://127.0.0.1:{port}/mcp", ("get", {"key": "any"}), headers=auth_headers(cp, namespace))
            assert out["get"]["is_error"] is True, out
            assert "unreachable" in " ".join(out["get"]["text"]).lower(), out
            # the sidecar stays up and Ready while Redis is down
            during = _pod(cp, namespace, "redis")
            side = _status(during, SIDECAR)
            assert side["restartCount"] == 0 and side["ready"] and "running" in side["state"], side

            # ... and recovers by itself once the kubelet brings Redis back
            degraded = [row]
            while (row := answers.get(timeout=40)) and row[1] != 200:
                degraded.append(row)
            outage = time.monotonic() - t_stop
            assert row is not None and row[1] == 200 and row[2]["status"] == "ok" and row[2]["reachable"] is True, row
            assert all(r[1] == 503 and r[2]["status"] == "degraded" for r in degraded), degraded
            print(f"\n[outage] /health degraded {degraded_after:.1f}s after SHUTDOWN, ok again after "
                  f"{outage:.1f}s ({len(degraded)} degraded answers, HTTP 503)")
            assert outage > 3, "the outage window was too short to observe the degraded state"

            # MCP works again without any restart (NOSAVE: the restarted Redis is empty)
            assert _redis_cli(cp, namespace, "redis", "SET", "after", "outage").stdout.strip() == "OK"
            out = mcp_calls(f"http://127.0.0.1:{port}/mcp", ("get", {"key": "after"}), headers=auth_headers(cp, namespace))
            assert out["get"]["structured"]["value"] == "outage", out
    finally:
        stop_group(watch)

    # the kubelet's status report lags the container itself by a sync period: wait for it
    after = cp.wait_for(lambda: (lambda p: p if ready_count(p) == (2, 2) and _status(p, "redis")["restartCount"] == 2
                                 else None)(_pod(cp, namespace, "redis")), 30, "Redis restart in the pod status")
    side = _status(after, SIDECAR)
    assert side["restartCount"] == 0, side
    assert side["containerID"] == sidecar_before["containerID"]
    assert side["state"]["running"]["startedAt"] == sidecar_before["state"]["running"]["startedAt"]
    assert ready_count(after) == (2, 2)
    assert not [p for p in pods(cp, namespace) if p["metadata"]["name"] != "redis"]
