"""What the container runtime really enforces on the injected sidecar, on a real node.

The webhook writes a Pod Security "restricted" security context into the `mcp-sidecar` container
(uid 1000, read-only root, no privilege escalation, drop ALL, RuntimeDefault seccomp, an emptyDir
at /tmp). Here runc applies it: `kubectl exec` into the running sidecar shows the uid, the read-only
root, the writable /tmp, no capabilities, no_new_privs and seccomp filtering in the process's own
/proc status; and an injected pod is admitted and runs 2/2 in a namespace that *enforces* the
restricted profile (while a non-compliant pod is rejected there, so enforcement is really on).
"""

from __future__ import annotations

import json

import pytest

from tests.cluster.controlplane import ControlPlaneError
from tests.node.kube import (
    BACKEND_LABEL,
    container_names,
    describe,
    exec_in,
    ready_count,
    redis_pod_spec,
    redis_secret,
    wait_pods_ready,
)

pytestmark = pytest.mark.slow

SIDECAR = "mcp-sidecar"
PASSWORD = "rt-sec-password"


def _redis_pod(name: str, *, restricted_datastore: bool = True) -> dict:
    """A plain Redis pod (password from a Secret, as deploy/examples/redis-statefulset.yaml), labelled;
    as the example, no runAsGroup (a pod-level runAsGroup would also become the sidecar's group if
    the sidecar's own securityContext did not set one)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {BACKEND_LABEL: "redis", "app": name}},
            "spec": redis_pod_spec(restricted=restricted_datastore)}


def _secret() -> dict:
    return redis_secret(PASSWORD)


def _proc_status(cp, namespace: str, pod: str) -> dict[str, str]:
    """/proc/1/status of the sidecar's main process, read from inside the container."""
    out = exec_in(cp, namespace, pod, SIDECAR, "cat", "/proc/1/status").stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def test_runtime_enforces_sidecar_security_context(cp, injector, namespace):
    cp.apply(_secret(), "-n", namespace)
    cp.apply(_redis_pod("redis"), "-n", namespace)
    [pod] = wait_pods_ready(cp, namespace, "app=redis", containers=2, timeout=180)
    assert container_names(pod) == ["redis", SIDECAR], describe(cp, namespace)

    # ---- the process runs as uid 1000, not as the datastore's user (999) nor root
    ident = exec_in(cp, namespace, "redis", SIDECAR, "id").stdout.strip()
    assert ident.startswith("uid=1000 "), ident
    assert exec_in(cp, namespace, "redis", "redis", "id", "-u").stdout.strip() == "999"

    # ---- read-only root filesystem: writing to / and to the image's files fails
    for path in ("/x", "/opt/venv/x", "/etc/x"):
        denied = exec_in(cp, namespace, "redis", SIDECAR, "touch", path, check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, (path, denied)

    # ---- /tmp (the injected emptyDir) is writable and is not the root filesystem
    wrote = exec_in(cp, namespace, "redis", SIDECAR, "sh", "-c",
                    "echo hello > /tmp/probe && cat /tmp/probe && rm /tmp/probe", check=False)
    assert wrote.returncode == 0 and wrote.stdout.strip() == "hello", wrote
    mounts = exec_in(cp, namespace, "redis", SIDECAR, "cat", "/proc/self/mounts").stdout.splitlines()
    root = next(line.split() for line in mounts if line.split()[1] == "/")
    tmp = next(line.split() for line in mounts if line.split()[1] == "/tmp")
    assert "ro" in root[3].split(","), root
    assert "rw" in tmp[3].split(","), tmp

    # ---- no capabilities, no privilege escalation, seccomp filter: as runc applied them
    status = _proc_status(cp, namespace, "redis")
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[field], 16) == 0, (field, status[field])
    assert status["NoNewPrivs"] == "1", status["NoNewPrivs"]
    assert status["Seccomp"] == "2", status["Seccomp"]  # 2 = SECCOMP_MODE_FILTER (RuntimeDefault)
    # a syscall RuntimeDefault blocks without CAP_SYS_ADMIN: unshare(CLONE_NEWUSER), which any
    # unprivileged process on this host may call, fails with EPERM inside the sidecar
    blocked = exec_in(cp, namespace, "redis", SIDECAR, "python3", "-c",
                      "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
                      "r = libc.unshare(0x10000000); print('denied' if r else 'allowed', ctypes.get_errno())",
                      check=False)
    assert blocked.stdout.split() == ["denied", "1"], blocked  # errno 1 = EPERM

    # ---- and the sidecar still does its job under all of this: /health answers from inside
    health = exec_in(cp, namespace, "redis", SIDECAR, "python3", "-c",
                     "import urllib.request;"
                     "print(urllib.request.urlopen('http://127.0.0.1:9000/health').read().decode())")
    assert json.loads(health.stdout)["status"] == "ok", health.stdout


def test_injected_pod_runs_in_restricted_namespace(cp, injector, namespace):
    cp.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
               "pod-security.kubernetes.io/enforce-version=latest")
    cp.apply(_secret(), "-n", namespace)

    # enforcement is really on: the same pod without the datastore's own restricted settings is refused
    with pytest.raises(ControlPlaneError) as refused:
        cp.apply(_redis_pod("loose", restricted_datastore=False), "-n", namespace)
    assert "violates PodSecurity" in str(refused.value) and '"restricted:latest"' in str(refused.value), refused.value
    # ... and only for the datastore's settings: the injected sidecar itself is compliant
    assert 'container "redis"' in str(refused.value), refused.value
    assert 'container "mcp-sidecar"' not in str(refused.value), refused.value

    # a restricted-compliant datastore with the injected sidecar is admitted and runs 2/2
    created = cp.apply(_redis_pod("redis"), "-n", namespace)
    assert "Warning" not in created.stderr, created.stderr
    [pod] = wait_pods_ready(cp, namespace, "app=redis", containers=2, timeout=180)
    assert SIDECAR in container_names(pod)
    assert ready_count(pod) == (2, 2)
    assert all(s["restartCount"] == 0 for s in pod["status"]["containerStatuses"]), pod["status"]
    assert json.loads(pod["metadata"]["annotations"]["mcp-sidecar.dox/status"])["backend"] == "redis"


def test_sidecar_primary_group_is_its_own(cp, injector, namespace):
    """The sidecar runs as 1000:1000 (the image's USER), whatever group the datastore pod uses."""
    cp.apply(_secret(), "-n", namespace)
    pod = _redis_pod("redis")  # the example's pod security context: runAsUser 999, no runAsGroup
    cp.apply(pod, "-n", namespace)
    wait_pods_ready(cp, namespace, "app=redis", containers=2, timeout=180)
    ident = exec_in(cp, namespace, "redis", SIDECAR, "id").stdout.strip()
    assert ident == "uid=1000 gid=1000 groups=1000", ident
