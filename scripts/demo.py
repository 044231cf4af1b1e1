"""`make demo`: the main job, end to end on this machine.

As root (the real-node path, what a user's cluster does):
1. builds what the demo uses and is missing, with progress: etcd, kube-apiserver,
   kube-controller-manager, kube-scheduler, kubelet, kube-proxy (Go modules), kubectl and helm,
   and the images (buildah: the injector from Dockerfile.webhook, the Redis sidecar from
   Dockerfile.sidecars, a Redis image from Debian's redis-server);
2. starts the local control plane and one real node (containerd + runc, kubelet, kube-proxy);
3. installs the Helm chart: the injector runs as two real pods;
4. applies deploy/examples/redis-statefulset.yaml without its label, then
   `kubectl label statefulset redis mcp-sidecar.dox/backend=redis`: the operator copies the label
   into the pod template, the rolling update brings the pod back 2/2 Ready with the sidecar;
5. an MCP session through `kubectl port-forward svc/redis-mcp` (the companion Service), with the
   bearer token read from the Secret mcp-sidecar-token the operator provisioned (auth is on by default).

Not root: the same story without a kubelet (one line says why): the control plane, the webhook as a
local process, the injected pod stored by the API server, and its `mcp-sidecar` container run as the
stored spec says (uid 1000, read-only root, tmpfs /tmp, under bubblewrap) against a real Redis.

Ctrl-C stops everything cleanly (exit 0). `--use-current-context` tells steps 3-5 on the cluster of
the current kubectl context (kind, minikube...).
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


_BOLD = sys.stdout.isatty()  # no ANSI codes in logs and pipes


def step(message: str) -> None:
    print(f"\n\033[1m==> {message}\033[0m" if _BOLD else f"\n==> {message}", flush=True)


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


TOKEN_SECRET = "mcp-sidecar-token"
TOKEN_COMMAND = f"kubectl get secret {TOKEN_SECRET} -n {NAMESPACE} -o jsonpath='{{.data.token}}' | base64 -d"


def wait_token_accepted(url: str, token: str, timeout: float = 150) -> None:
    """A pod started before its Secret existed sees the token at the kubelet's next sync (about a
    minute); until then its sidecar refuses MCP calls with 503 (fails closed)."""
    import urllib.error

    body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": {}}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
    deadline, said = time.monotonic() + timeout, False
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10):
                return
        except urllib.error.HTTPError as err:
            if err.code != 503 or time.monotonic() > deadline:
                return
            if not said:
                print("the sidecar has no token yet (503, fails closed): waiting for the kubelet to mount the Secret", flush=True)
                said = True
        except OSError:
            if time.monotonic() > deadline:
                return
        time.sleep(1)


async def mcp_session(url: str, token: str) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    print(f"tokenless POST /mcp -> {_status_without_token(url)} (auth is on by default)")
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http, \
            Client(streamable_http_client(url, http_client=http)) as client:
        tools = await client.list_tools()
        names = [t.name for t in tools.tools]
        print(f"tools/list: {len(names)} tools (read-only mode), e.g. {', '.join(names[:8])} ...")
        for name, arguments in (("get", {"key": "demo:greeting"}), ("dbsize", {})):
            result = await client.call_tool(name, arguments)
            payload = result.structured_content or [c.text for c in result.content if hasattr(c, "text")]
            print(f"tools/call {name} {json.dumps(arguments)} -> {json.dumps(payload)}")


def _status_without_token(url: str) -> int:
    import urllib.error

    request = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def run_on_node(wait: bool) -> int:
    """The real-node path: a control plane plus one kubelet node on this machine, then the cluster story."""
    from tests.cluster import images
    from tests.cluster.node import Node

    step("building what the demo needs, if missing (first time: several minutes, progress below)")
    ensure_binaries(("etcd", "kube", "tools"))
    archives = images.ensure_images(
        names=(images.PAUSE, images.INJECTOR, images.MCP_REDIS, images.REDIS), log=lambda m: print(m, flush=True))
    with contextlib.ExitStack() as stack:
        step("starting etcd, kube-apiserver, kube-controller-manager and one node (containerd, kubelet, kube-proxy)")
        cp = stack.enter_context(ControlPlane(build=False))
        node = stack.enter_context(Node(cp))
        seconds = node.import_images(a.path for a in archives)
        print(f"imported {len(archives)} images into the node's containerd in {seconds:.1f}s", flush=True)
        env = {"KUBECONFIG": str(cp.kubeconfig)}
        print(f"kubectl:  {cp.bin_dir / 'kubectl'} --kubeconfig={cp.kubeconfig} get pods -A", flush=True)
        return cluster_story(wait, kubectl=str(cp.bin_dir / "kubectl"), helm=str(cp.bin_dir / "helm3"), env=env,
                             webhook_image=images.INJECTOR.removeprefix("docker.io/"), cleanup=False)


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

        step("the sidecars' bearer token: no operator runs here, so create the Secret as an `inject -f` user does")
        mcp_sidecar = [sys.executable, "-m", "webhook.cli"]
        print(f"$ mcp-sidecar rotate-token -n {NAMESPACE}", flush=True)
        print(subprocess.run([*mcp_sidecar, "rotate-token", "-n", NAMESPACE, "--kubeconfig", str(cp.kubeconfig)],
                             capture_output=True, text=True, check=True, cwd=REPO).stdout.rstrip())
        secret = cp.kubectl_json("get", "secret", TOKEN_SECRET, "-n", NAMESPACE)
        token = base64.b64decode(secret["data"]["token"]).decode()

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
        # The pod mounts the Secret at MCP_AUTH_TOKEN_FILE; the sandbox has no such mount, so its value goes in env.
        env.pop("MCP_AUTH_TOKEN_FILE", None)
        env["MCP_AUTH_TOKEN"] = token
        print(f"REDIS_PORT -> {redis.port} (the demo's Redis), MCP_PORT -> {mcp_port}, the Secret's token as "
              "MCP_AUTH_TOKEN instead of the mounted file; everything else as stored")
        entrypoint = str(REPO / ".venv" / "bin" / SIDECAR_ENTRYPOINT[status["backend"]])
        log = open(workdir / "sidecar.log", "wb")
        proc = subprocess.Popen(sandboxed([entrypoint]), env={"PATH": os.environ.get("PATH", ""), **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(stop_group, proc)
        health = wait_health(f"http://127.0.0.1:{mcp_port}/health")
        print(f"GET /health -> {json.dumps(health)}")

        step(f"one MCP session through the sidecar: http://127.0.0.1:{mcp_port}/mcp")
        asyncio.run(mcp_session(f"http://127.0.0.1:{mcp_port}/mcp", token))

        step("done")
        if wait:
            print(f"Try it yourself:  {kubectl} get pods -n {NAMESPACE} -o yaml")
            print(f"                  npx @modelcontextprotocol/inspector --cli http://127.0.0.1:{mcp_port}/mcp --method tools/list "
                  f"--header \"Authorization: Bearer $({kubectl} get secret {TOKEN_SECRET} -n {NAMESPACE} "
                  "-o jsonpath='{.data.token}' | base64 -d)\"")
            print("Everything keeps running; press Ctrl-C to stop it all.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
                while proc.poll() is None:
                    time.sleep(1)
        step("stopping the sidecar, Redis, the webhook and the control plane")
    print("stopped cleanly.")
    return 0


def run_current_context(wait: bool, webhook_image: str | None) -> int:
    """Steps 3-5 on a real cluster (kind, minikube, ...): the images must be pullable by it
    (`make images`, then e.g. `kind load docker-image ...`)."""
    kubectl = shutil.which("kubectl") or str(REPO / ".cache" / "bin" / "kubectl")
    helm = shutil.which("helm") or str(REPO / ".cache" / "bin" / "helm3")
    if not Path(kubectl).exists() or not Path(helm).exists():
        ensure_binaries(("tools",))
    context = subprocess.run([kubectl, "config", "current-context"], capture_output=True, text=True)
    if context.returncode != 0:
        print(f"no current kubectl context: {context.stderr.strip()}", file=sys.stderr)
        return 2
    print(f"kubectl context: {context.stdout.strip()}", flush=True)
    return cluster_story(wait, kubectl=kubectl, helm=helm, env={}, webhook_image=webhook_image, cleanup=True)


def cluster_story(wait: bool, *, kubectl: str, helm: str, env: dict[str, str], webhook_image: str | None,
                  cleanup: bool) -> int:
    """The chart, the operator path (`kubectl label statefulset`), the injected pod 2/2 Ready, and an
    MCP session through the companion Service, on whatever cluster ``env`` (KUBECONFIG) points at."""
    import shlex

    full_env = {**os.environ, **env}

    def run(*argv: str, check: bool = True, capture: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
        print("$ " + shlex.join([Path(argv[0]).name, *argv[1:]]), flush=True)  # quoted: copy-pastable
        done = subprocess.run(argv, check=False, text=True, capture_output=capture, input=input, env=full_env)
        if check and done.returncode != 0:
            if capture:  # say why it failed (e.g. helm's --wait timeout), not only that it did
                print(f"{done.stdout or ''}{done.stderr or ''}", file=sys.stderr, flush=True)
            raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
        return done

    release, system_ns = "mcp-injector", "mcp-system"
    # --create-namespace makes it when missing; the cleanup then removes it too (only on a clear NotFound).
    probe = subprocess.run([kubectl, "get", "namespace", system_ns], capture_output=True, text=True, env=full_env)
    system_ns_existed = probe.returncode == 0 or "NotFound" not in probe.stderr
    step(f"installing the Helm chart (namespace {system_ns}): the injector runs as two pods")
    helm_args = [helm, "upgrade", "--install", release, str(REPO / "deploy/helm/mcp-sidecar-injector"),
                 "-n", system_ns, "--create-namespace", "--wait", "--timeout", "5m"]
    if webhook_image:
        repository, _, tag = webhook_image.rpartition(":")
        helm_args += ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]
    port_forward = None
    try:
        run(*helm_args, capture=True)
        run(kubectl, "get", "pods", "-n", system_ns)
        step(f"a plain Redis StatefulSet in namespace {NAMESPACE}, then `kubectl label statefulset`")
        run(kubectl, "create", "namespace", NAMESPACE, check=False, capture=True)
        plain = EXAMPLE.read_text().replace("        mcp-sidecar.dox/backend: redis\n", "")
        run(kubectl, "apply", "-n", NAMESPACE, "-f", "-", input=plain)
        run(kubectl, "rollout", "status", "statefulset/redis", "-n", NAMESPACE, "--timeout=5m")
        run(kubectl, "label", "statefulset", "redis", "-n", NAMESPACE, "mcp-sidecar.dox/backend=redis", "--overwrite")
        print("the operator copies the label into the pod template; the rolling update replaces the pod", flush=True)
        _wait_injected_ready(kubectl, full_env)
        run(kubectl, "get", "pods", "-n", NAMESPACE, "-o", "wide")
        run(str(REPO / ".venv/bin/mcp-sidecar"), "audit", "-n", NAMESPACE)
        run(kubectl, "exec", "-n", NAMESPACE, "redis-0", "-c", "redis", "--", "sh", "-c",
            'redis-cli --no-auth-warning -a "$REDIS_PASSWORD" SET demo:greeting "hello from the Redis behind the MCP sidecar"')
        step("an MCP session through the companion Service redis-mcp:9000 (kubectl port-forward)")
        local = free_port()
        port_forward = subprocess.Popen([kubectl, "port-forward", "-n", NAMESPACE, "--address=127.0.0.1",
                                         "service/redis-mcp", f"{local}:9000"], env=full_env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        print(f"$ kubectl port-forward -n {NAMESPACE} service/redis-mcp {local}:9000", flush=True)
        print(f"GET /health -> {json.dumps(wait_health(f'http://127.0.0.1:{local}/health', timeout=60))}")
        print(f"the token the operator provisioned: $ {TOKEN_COMMAND}", flush=True)
        token = base64.b64decode(subprocess.run(
            [kubectl, "get", "secret", TOKEN_SECRET, "-n", NAMESPACE, "-o", "jsonpath={.data.token}"],
            capture_output=True, text=True, check=True, env=full_env).stdout).decode()
        wait_token_accepted(f"http://127.0.0.1:{local}/mcp", token)
        asyncio.run(mcp_session(f"http://127.0.0.1:{local}/mcp", token))
        step("done")
        if wait:
            print(f"Try it yourself:  npx @modelcontextprotocol/inspector --cli http://127.0.0.1:{local}/mcp "
                  f"--transport http --method tools/list --header \"Authorization: Bearer $({TOKEN_COMMAND})\"")
            print("Everything keeps running; press Ctrl-C to stop it all.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while port_forward.poll() is None:
                    time.sleep(1)
    finally:
        if port_forward is not None:
            stop_group(port_forward)
        if cleanup:
            step("cleaning up: the demo namespace and the chart")
            run(kubectl, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
            run(helm, "uninstall", release, "-n", system_ns, check=False)
            if not system_ns_existed:
                run(kubectl, "delete", "namespace", system_ns, "--ignore-not-found", "--wait=false", check=False)
        else:
            step("stopping the pods, the node and the control plane")
    print("stopped cleanly.")
    return 0


def _wait_injected_ready(kubectl: str, env: dict[str, str], timeout: float = 300) -> None:
    """Until redis-0 is the injected pod (2 containers) and both are Ready (`kubectl get` shows 2/2)."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run([kubectl, "get", "pod", "redis-0", "-n", NAMESPACE, "-o", "json"], capture_output=True,
                              text=True, env=env)
        if done.returncode == 0:
            pod = json.loads(done.stdout)
            names = [c["name"] for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])]
            statuses = pod.get("status", {}).get("containerStatuses", []) + pod.get("status", {}).get("initContainerStatuses", [])
            ready = [s["name"] for s in statuses if s.get("ready")]
            if "mcp-sidecar" in names and {"redis", "mcp-sidecar"} <= set(ready) and not pod["metadata"].get("deletionTimestamp"):
                print(f"redis-0: 2/2 Ready (containers {', '.join(names)})", flush=True)
                return
        if time.monotonic() > deadline:
            # Say why: e.g. the StatefulSet controller's FailedCreate (the API server rejected the
            # injected pod), the label not propagated to the template, or a sidecar that is not Ready.
            state = [subprocess.run([kubectl, *args, "-n", NAMESPACE], capture_output=True, text=True, env=env).stdout
                     for args in (["get", "statefulset", "redis", "-o", "jsonpath={.spec.template.metadata.labels}"],
                                  ["get", "pods", "-o", "wide"], ["get", "events", "--sort-by=.lastTimestamp"])]
            raise RuntimeError(f"redis-0 did not become 2/2 Ready in {timeout:.0f}s\npod template labels: "
                               f"{state[0] or '-'}\n{state[1]}{state[2][-3000:]}")
        time.sleep(1)


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
    parser.add_argument("--no-node", action="store_true", help="the path without a kubelet even as root")
    args = parser.parse_args()
    wait = not args.no_wait and sys.stdin.isatty()
    # Ctrl-C (and SIGTERM) unwinds every `with` and ends with exit 0.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if args.use_current_context:
            return run_current_context(wait, args.webhook_image)
        if not args.no_node:
            from tests.cluster.node import why_not_runnable

            reason = why_not_runnable()
            if reason is None or "not built" in reason:
                return run_on_node(wait)
            print(f"no real node here ({reason}): showing the injection without a kubelet", flush=True)
        return run_without_node(wait)
    except KeyboardInterrupt:
        print("\ninterrupted: everything was stopped.", flush=True)
        return 0


def run_without_node(wait: bool) -> int:
    if shutil.which("bwrap") is None:
        print("bubblewrap missing: run scripts/setup.sh", file=sys.stderr)
        return 2
    return run_demo(wait=wait)


if __name__ == "__main__":
    sys.exit(main())
