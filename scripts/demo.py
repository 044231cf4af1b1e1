"""`make demo`: the main job, end to end on this machine.

1. builds what is missing (etcd, kube-apiserver, kube-controller-manager, kubectl) with progress;
2. starts the local control plane, the TLS admission webhook and a real Redis with a password;
3. applies deploy/examples/redis-statefulset.yaml (labelled pod template) and shows the injected pods;
4. runs the injected `mcp-sidecar` container exactly as the stored pod spec describes it (its env,
   with the Secret reference resolved; as uid 1000 on a read-only root with a tmpfs /tmp, under
   bubblewrap), pointed at the local Redis, and performs MCP tool calls through it.

Ctrl-C stops everything cleanly. `--use-current-context` tells the same story on a real cluster
(kind, minikube...) through the Helm chart and `kubectl label statefulset`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.backends.redis_server import RedisServer  # noqa: E402
from tests.cluster.controlplane import ControlPlane, ensure_binaries  # noqa: E402
from tests.support.processes import stop_group  # noqa: E402
from tests.support.sandbox import sandboxed  # noqa: E402
from tests.support.webhook_process import WebhookProcess, free_port  # noqa: E402

EXAMPLE = REPO / "deploy" / "examples" / "redis-statefulset.yaml"
NAMESPACE = "demo"
SIDECAR_ENTRYPOINT = {"redis": "mcp-redis", "elasticsearch": "mcp-elasticsearch"}  # the images' ENTRYPOINTs


def step(message: str) -> None:
    print(f"\n\033[1m==> {message}\033[0m", flush=True)


def resolve_env(cp: ControlPlane, namespace: str, env: list[dict]) -> dict[str, str]:
    """The container's env as the kubelet would resolve it (values and secretKeyRefs)."""
    resolved: dict[str, str] = {}
    for entry in env:
        if "value" in entry:
            resolved[entry["name"]] = entry["value"]
            continue
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret = cp.kubectl_json("get", "secret", "-n", namespace, ref["name"])
            resolved[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return resolved


def wait_health(url: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def mcp_session(url: str) -> None:
    from mcp import Client

    async with Client(url) as client:
        tools = await client.list_tools()
        names = [t.name for t in tools.tools]
        print(f"tools/list: {len(names)} tools (read-only mode), e.g. {', '.join(names[:8])} ...")
        for name, arguments in (("get", {"key": "demo:greeting"}), ("dbsize", {})):
            result = await client.call_tool(name, arguments)
            payload = result.structured_content or [c.text for c in result.content if hasattr(c, "text")]
            print(f"tools/call {name} {json.dumps(arguments)} -> {json.dumps(payload)}")


def run_demo(wait: bool) -> int:
    step("building the local control plane if needed (first time: several minutes, progress below)")
    ensure_binaries()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcp-demo-")))
        step("starting etcd, kube-apiserver and kube-controller-manager")
        cp = stack.enter_context(ControlPlane(build=False))
        kubectl = f"{cp.bin_dir / 'kubectl'} --kubeconfig={cp.kubeconfig}"

        step("starting the admission webhook (mcp-sidecar serve, TLS) and registering it")
        hook = stack.enter_context(WebhookProcess(workdir / "webhook"))
        cp.register_mutating_webhook(hook.url + "/mutate", hook.ca_pem)
        print(f"webhook {hook.url}/mutate, failurePolicy Ignore, objectSelector mcp-sidecar.dox/backend Exists")

        step(f"applying {EXAMPLE.relative_to(REPO)} in namespace {NAMESPACE}")
        cp.create_namespace(NAMESPACE)
        print(cp.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE)).stdout.strip())

        def injected_pod():
            items = cp.kubectl_json("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=redis")["items"]
            return items[0] if items else None

        pod = cp.wait_for(injected_pod, timeout=60, what="the StatefulSet's pod")
        step("the StatefulSet controller created the pod; the API server stored it injected (Pending: no kubelet here)")
        print(cp.kubectl("get", "pods", "-n", NAMESPACE, "-o",
                         "custom-columns=POD:.metadata.name,STATUS:.status.phase,"
                         "CONTAINERS:.spec.containers[*].name,IMAGES:.spec.containers[*].image").stdout.rstrip())
        status = json.loads(pod["metadata"]["annotations"]["mcp-sidecar.dox/status"])
        print(f"mcp-sidecar.dox/status: {json.dumps(status)}")
        sidecar = next(c for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []) if c["name"] == "mcp-sidecar")
        print(f"sidecar env: {json.dumps(sidecar['env'])}")

        step("starting a real Redis with the password from the Secret the pod references")
        env = resolve_env(cp, NAMESPACE, sidecar["env"])
        redis = stack.enter_context(RedisServer(password=env.get("REDIS_PASSWORD")))
        redis.command("SET", "demo:greeting", "hello from the Redis behind the MCP sidecar")

        step("running the injected container as its spec says: uid 1000, read-only root, tmpfs /tmp")
        # In the pod, localhost:6379 is Redis and 9000 is free; here both live on a shared host,
        # so the two ports are the only values we change (and say so).
        env["REDIS_PORT"] = str(redis.port)
        mcp_port = int(env.get("MCP_PORT", "9000"))
        if not _port_free(mcp_port):
            mcp_port = free_port()
        env["MCP_PORT"] = str(mcp_port)
        print(f"REDIS_PORT -> {redis.port} (the demo's Redis), MCP_PORT -> {mcp_port}; everything else as stored")
        entrypoint = str(REPO / ".venv" / "bin" / SIDECAR_ENTRYPOINT[status["backend"]])
        log = open(workdir / "sidecar.log", "wb")
        proc = subprocess.Popen(sandboxed([entrypoint]), env={"PATH": os.environ.get("PATH", ""), **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(stop_group, proc)
        health = wait_health(f"http://127.0.0.1:{mcp_port}/health")
        print(f"GET /health -> {json.dumps(health)}")

        step(f"one MCP session through the sidecar: http://127.0.0.1:{mcp_port}/mcp")
        asyncio.run(mcp_session(f"http://127.0.0.1:{mcp_port}/mcp"))

        step("done")
        if wait:
            print(f"Try it yourself:  {kubectl} get pods -n {NAMESPACE} -o yaml")
            print(f"                  npx @modelcontextprotocol/inspector --cli http://127.0.0.1:{mcp_port}/mcp --method tools/list")
            print("Everything keeps running; press Ctrl-C to stop it all.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
                while proc.poll() is None:
                    time.sleep(1)
        step("stopping the sidecar, Redis, the webhook and the control plane")
    print("stopped cleanly.")
    return 0


def run_current_context(wait: bool, webhook_image: str | None) -> int:
    """The same story on a real cluster (kind, minikube, ...): the Helm chart, the operator path
    (`kubectl label statefulset`), the injected pod, and an MCP call through the companion Service.

    The images must be pullable by the cluster (`make images`, then `kind load docker-image ...`).
    """
    kubectl = shutil.which("kubectl") or str(REPO / ".cache" / "bin" / "kubectl")
    helm = shutil.which("helm") or str(REPO / ".cache" / "bin" / "helm3")
    if not Path(kubectl).exists() or not Path(helm).exists():
        ensure_binaries(("tools",))
    context = subprocess.run([kubectl, "config", "current-context"], capture_output=True, text=True)
    if context.returncode != 0:
        print(f"no current kubectl context: {context.stderr.strip()}", file=sys.stderr)
        return 2

    def run(*argv: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
        print("$ " + " ".join(argv), flush=True)
        return subprocess.run(argv, check=check, text=True, capture_output=capture)

    release, system_ns = "mcp-injector", "mcp-system"
    step(f"installing the chart into context {context.stdout.strip()!r} (namespace {system_ns})")
    helm_args = [helm, "upgrade", "--install", release, str(REPO / "deploy/helm/mcp-sidecar-injector"),
                 "-n", system_ns, "--create-namespace", "--wait", "--timeout", "5m"]
    if webhook_image:
        repository, _, tag = webhook_image.rpartition(":")
        helm_args += ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]
    port_forward = None
    try:
        run(*helm_args)
        step(f"a plain Redis StatefulSet in namespace {NAMESPACE}, then `kubectl label statefulset`")
        run(kubectl, "create", "namespace", NAMESPACE, check=False)
        plain = EXAMPLE.read_text().replace("        mcp-sidecar.dox/backend: redis\n", "")
        print("$ kubectl apply -n demo -f - (the example without the pod template label)", flush=True)
        subprocess.run([kubectl, "apply", "-n", NAMESPACE, "-f", "-"], input=plain, text=True, check=True)
        run(kubectl, "label", "statefulset", "redis", "-n", NAMESPACE, "mcp-sidecar.dox/backend=redis", "--overwrite")
        run(kubectl, "rollout", "status", "statefulset/redis", "-n", NAMESPACE, "--timeout=5m")
        run(kubectl, "get", "pods", "-n", NAMESPACE, "-o", "custom-columns=POD:.metadata.name,READY:.status.containerStatuses[*].ready,CONTAINERS:.spec.containers[*].name")
        run(str(REPO / ".venv/bin/mcp-sidecar"), "audit", "-n", NAMESPACE)
        step("an MCP session through the companion Service redis-mcp:9000 (kubectl port-forward)")
        local = free_port()
        port_forward = subprocess.Popen([kubectl, "port-forward", "-n", NAMESPACE, "service/redis-mcp", f"{local}:9000"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        print(f"GET /health -> {json.dumps(wait_health(f'http://127.0.0.1:{local}/health', timeout=60))}")
        asyncio.run(mcp_session(f"http://127.0.0.1:{local}/mcp"))
        if wait:
            print("Press Ctrl-C to remove the demo namespace and the chart.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    finally:
        if port_forward is not None:
            stop_group(port_forward)
        step("cleaning up: the demo namespace and the chart")
        run(kubectl, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
        run(helm, "uninstall", release, "-n", system_ns, check=False)
    print("stopped cleanly.")
    return 0


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-wait", action="store_true", help="stop right after the MCP call (default when stdin is not a terminal)")
    parser.add_argument("--use-current-context", action="store_true",
                        help="a real cluster from the current kubectl context, with the Helm chart (images must be pullable)")
    parser.add_argument("--webhook-image", help="with --use-current-context: the injector image (REPOSITORY:TAG)")
    args = parser.parse_args()
    wait = not args.no_wait and sys.stdin.isatty()
    if args.use_current_context:
        return run_current_context(wait, args.webhook_image)
    if shutil.which("bwrap") is None:
        print("bubblewrap missing: run scripts/setup.sh", file=sys.stderr)
        return 2
    return run_demo(wait=wait)


if __name__ == "__main__":
    sys.exit(main())
