"""`scripts/demo.sh --use-current-context` on a real node: the README's story on "your" cluster.

The kubectl context is the node's admin kubeconfig (KUBECONFIG), `kubectl` on PATH is the project's
(.cache/bin first), `helm` is not on PATH so the script falls back to .cache/bin/helm3. The script
installs release mcp-injector in mcp-system, applies deploy/examples/redis-statefulset.yaml without
its label in namespace `demo`, runs `kubectl label statefulset redis mcp-sidecar.dox/backend=redis`,
waits for redis-0 2/2 Ready, writes a key with redis-cli, and makes MCP calls through
`kubectl port-forward service/redis-mcp` (the operator's companion Service); then it removes the
namespace and the release. Asserted from its output: exit 0, redis-0 2/2 Running with the sidecar,
the audit says injected, the MCP `get` answered with the value written; and afterwards: the
release, the demo namespace and (when the script created it) mcp-system are gone.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from tests.cluster.controlplane import BIN_DIR
from tests.node.kube import REPO

pytestmark = pytest.mark.slow

RELEASE, RELEASE_NS, DEMO_NS = "mcp-injector", "mcp-system", "demo"
VALUE = "hello from the Redis behind the MCP sidecar"


def _namespace_exists(cp, name: str) -> bool:
    return cp.kubectl("get", "namespace", name, check=False).returncode == 0


def _namespace_terminating(cp, name: str) -> bool:
    done = cp.kubectl("get", "namespace", name, "-o", "jsonpath={.status.phase}", check=False)
    return done.returncode == 0 and done.stdout.strip() == "Terminating"


def test_demo_use_current_context_runs_the_story_on_the_node(cp, tmp_path):
    for name in (DEMO_NS, RELEASE_NS):  # a previous run's namespace may still be terminating
        cp.wait_for(lambda: not _namespace_terminating(cp, name), 180, f"namespace {name} from an earlier run to be gone")
    system_ns_existed = _namespace_exists(cp, RELEASE_NS)
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "PATH": f"{BIN_DIR}:{os.environ.get('PATH', '')}",
           # helm's own state stays in this test's directory
           "HELM_CACHE_HOME": str(tmp_path / "helm" / "cache"), "HELM_CONFIG_HOME": str(tmp_path / "helm" / "config"),
           "HELM_DATA_HOME": str(tmp_path / "helm" / "data")}
    started = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--use-current-context", "--no-wait",
                               "--webhook-image", "mcp/sidecar-injector:0.1.0"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL, check=False)
        seconds = time.monotonic() - started
        out = proc.stdout
        print(out)
        assert proc.returncode == 0, out[-6000:] + proc.stderr[-4000:]
        assert "\033[" not in out  # no ANSI codes in a pipe

        assert "kubectl context: local" in out
        assert f"$ helm3 upgrade --install {RELEASE}" in out  # the fallback to .cache/bin/helm3
        assert "kubectl label statefulset redis -n demo mcp-sidecar.dox/backend=redis" in out
        # the pod after the label: both containers Ready, as `kubectl get pods` shows it
        assert "redis-0: 2/2 Ready (containers redis, mcp-sidecar)" in out
        assert re.search(r"^redis-0\s+2/2\s+Running\s", out, re.M), out
        # `mcp-sidecar audit -n demo`
        assert re.search(r"^demo\s+redis-0\s+StatefulSet/redis\s+redis\s+injected\s+yes\s", out, re.M), out
        # the value is written with redis-cli in the Redis container (the command shown copy-pastable)
        assert ("$ kubectl exec -n demo redis-0 -c redis -- sh -c 'redis-cli --no-auth-warning -a \"$REDIS_PASSWORD\" "
                f'SET demo:greeting "{VALUE}"\'\nOK\n') in out
        # the MCP session through the companion Service answered with the value redis-cli wrote
        assert '"reachable": true' in out
        get = next((line for line in out.splitlines() if line.startswith('tools/call get {"key": "demo:greeting"}')), "")
        assert VALUE in get, out
        assert "stopped cleanly." in out
        print(f"\n[timing] demo.sh --use-current-context: {seconds:.1f}s")

        # ---- its cleanup: the release and the demo namespace are gone
        assert RELEASE not in cp.kubectl("get", "deployments", "-n", RELEASE_NS, "-o", "name", check=False).stdout
        assert cp.kubectl("get", "mutatingwebhookconfigurations", "-o", "name").stdout.count(RELEASE) == 0
        cp.wait_for(lambda: not _namespace_exists(cp, DEMO_NS), 180, "namespace demo to be deleted")
        if not system_ns_existed:  # created by `helm --create-namespace`, so removed too
            cp.wait_for(lambda: not _namespace_exists(cp, RELEASE_NS), 180, f"namespace {RELEASE_NS} to be deleted")
    finally:
        # whatever happened: nothing of the demo stays on the shared node
        helm = [str(BIN_DIR / "helm3"), "uninstall", RELEASE, "-n", RELEASE_NS, "--ignore-not-found"]
        subprocess.run(helm, env=env, capture_output=True, timeout=300, check=False)
        cp.kubectl("delete", "namespace", DEMO_NS, "--ignore-not-found", "--wait=false", check=False)
        if not system_ns_existed:
            cp.kubectl("delete", "namespace", RELEASE_NS, "--ignore-not-found", "--wait=false", check=False)
