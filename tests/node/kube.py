"""Small helpers for the real-node tests: Helm, waiting for pods, port-forward, exec, MCP calls.

Everything goes through the real tools a user has (kubectl, helm, an MCP client), against the
node's control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tests.cluster.controlplane import BIN_DIR, ControlPlane, ControlPlaneError
from tests.support.processes import free_port, stop_group

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "mcp-sidecar-injector"
BACKEND_LABEL = "mcp-sidecar.dox/backend"
WEBHOOK_NAME = "inject.mcp-sidecar.dox"
# Not the demo's release (mcp-injector in mcp-system): `demo.sh --use-current-context` installs and removes that one.
RELEASE, RELEASE_NS = "node-injector", "node-injector-system"


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


class Helm:
    """helm (3 by default, ``which="helm4"`` for Helm 4) with its own home dirs, against ``cp``."""

    def __init__(self, cp: ControlPlane, home: Path, which: str = "helm3"):
        self.path = BIN_DIR / which
        self.env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
                    "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}

    def __call__(self, *args: str, check: bool = True, timeout: float = 400) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.path), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done


@dataclass
class Injector:
    cp: ControlPlane
    helm: Helm
    release: str = RELEASE
    namespace: str = RELEASE_NS
    values: tuple[str, ...] = ()

    @property
    def deployment(self) -> str:
        return f"{self.release}-mcp-sidecar-injector" if "mcp-sidecar-injector" not in self.release else self.release

    def uninstall(self) -> None:
        self.helm("uninstall", self.release, "-n", self.namespace, "--wait", check=False)


def install_injector(cp: ControlPlane, helm_home: Path, *extra_values: str, reuse: bool = False) -> Injector:
    """``helm upgrade --install --wait`` of the chart with the image built from Dockerfile.webhook.

    ``reuse``: leave an already deployed release as it is (a shared development node, where another
    session's test may have changed it on purpose, e.g. the outage test's healing).
    """
    helm = Helm(cp, helm_home)
    values = ("--set", "image.repository=mcp/sidecar-injector", "--set", f"image.tag={project_version()}",
              *extra_values)
    deployed = reuse and '"status":"deployed"' in helm("status", RELEASE, "-n", RELEASE_NS, "-o", "json",
                                                        check=False).stdout.replace(" ", "")
    if not deployed:
        helm("upgrade", "--install", RELEASE, str(CHART), "-n", RELEASE_NS, "--create-namespace", "--wait",
             "--timeout", "5m", *values)
    inj = Injector(cp, helm, values=values)
    cp.wait_for_webhook(WEBHOOK_NAME, timeout=60, expect_container="mcp-sidecar")
    return inj


# ---- pods ---------------------------------------------------------------------------------------


def redis_pod_spec(*, restricted: bool = True, password: bool = True) -> dict:
    """The spec of a plain Redis pod as deploy/examples/redis-statefulset.yaml has it: the password
    from the Secret ``redis`` (key ``redis-password``, see :func:`redis_secret`), and with
    ``restricted`` the Pod Security "restricted" settings (uid 999, no runAsGroup, as the example)."""
    redis: dict = {"name": "redis", "image": "redis:7.4", "ports": [{"name": "redis", "containerPort": 6379}]}
    if password:
        redis["args"] = ["--requirepass", "$(REDIS_PASSWORD)"]
        redis["env"] = [{"name": "REDIS_PASSWORD",
                         "valueFrom": {"secretKeyRef": {"name": "redis", "key": "redis-password"}}}]
    spec: dict = {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 2, "containers": [redis]}
    if restricted:
        spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 999, "seccompProfile": {"type": "RuntimeDefault"}}
        redis["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return spec


def redis_secret(password: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis"}, "type": "Opaque",
            "stringData": {"redis-password": password}}


def pods(cp: ControlPlane, namespace: str, selector: str = "") -> list[dict]:
    args = ["get", "pods", "-n", namespace] + (["-l", selector] if selector else [])
    return cp.kubectl_json(*args)["items"]


def ready_count(pod: dict) -> tuple[int, int]:
    """(ready, total) as `kubectl get pods` shows READY; native sidecars count as containers."""
    spec = pod["spec"]
    native = [c["name"] for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    total = len(spec["containers"]) + len(native)
    statuses = pod.get("status", {}).get("containerStatuses", []) + [
        s for s in pod.get("status", {}).get("initContainerStatuses", []) if s["name"] in native]
    return sum(1 for s in statuses if s.get("ready")), total


def wait_pods_ready(cp: ControlPlane, namespace: str, selector: str, count: int = 1, *,
                    containers: int | None = None, timeout: float = 180) -> list[dict]:
    """Wait until ``count`` pods match and each is fully Ready (``containers`` of them, if given)."""

    def ready() -> list[dict] | None:
        items = [p for p in pods(cp, namespace, selector) if not p["metadata"].get("deletionTimestamp")]
        if len(items) != count:
            return None
        for p in items:
            r, t = ready_count(p)
            if r != t or (containers is not None and t != containers):
                return None
        return items

    try:
        return cp.wait_for(ready, timeout, f"{count} pod(s) {selector} Ready in {namespace}", interval=0.5)
    except ControlPlaneError as exc:
        raise ControlPlaneError(f"{exc}\n{describe(cp, namespace, selector)}") from None


def describe(cp: ControlPlane, namespace: str, selector: str = "") -> str:
    """State of pods and recent events, for assertion messages."""
    args = ["-n", namespace] + (["-l", selector] if selector else [])
    out = cp.kubectl("get", "pods", "-o", "wide", *args, check=False).stdout
    out += cp.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout[-4000:]
    return out


def container_names(pod: dict) -> list[str]:
    return [c["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]]


def exec_in(cp: ControlPlane, namespace: str, pod: str, container: str, *command: str,
            check: bool = True) -> subprocess.CompletedProcess:
    return cp.kubectl("exec", "-n", namespace, pod, "-c", container, "--", *command, check=check)


@contextlib.contextmanager
def port_forward(cp: ControlPlane, namespace: str, target: str, remote_port: int) -> Iterator[int]:
    """``kubectl port-forward TARGET LOCAL:REMOTE`` (target e.g. ``svc/redis-mcp``); yields the local port."""
    local = free_port()
    proc = subprocess.Popen(
        [str(BIN_DIR / "kubectl"), f"--kubeconfig={cp.kubeconfig}", "port-forward", "-n", namespace,
         "--address=127.0.0.1", target, f"{local}:{remote_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 9000" once listening
        if "Forwarding from" not in line:
            raise ControlPlaneError(f"kubectl port-forward {target}: {line}{proc.stdout.read() if proc.poll() is not None else ''}")
        yield local
    finally:
        stop_group(proc)


def http_json(url: str, timeout: float = 10) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        body = err.read()
        with contextlib.suppress(ValueError):
            return err.code, json.loads(body)
        return err.code, body.decode(errors="replace")


def wait_http(url: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = http_json(url, timeout=3)
            if status == 200:
                return body
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out waiting for {url}")
        time.sleep(0.3)


TOKEN_SECRET = "mcp-sidecar-token"


def sidecar_token(cp: ControlPlane, namespace: str, timeout: float = 60) -> str:
    """The sidecars' bearer token, read from the Secret the operator provisions (the user's story:
    ``kubectl get secret mcp-sidecar-token -o jsonpath='{.data.token}' | base64 -d``)."""
    import base64

    def read() -> str | None:
        status, body = cp.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{TOKEN_SECRET}")
        return base64.b64decode(body["data"]["token"]).decode() if status == 200 else None

    return cp.wait_for(read, timeout, f"Secret {namespace}/{TOKEN_SECRET} (created by the operator)")


def auth_headers(cp: ControlPlane, namespace: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sidecar_token(cp, namespace)}"}


def wait_token_accepted(url: str, headers: dict[str, str], timeout: float = 150) -> None:
    """A pod that started before its Secret existed gets the token file at the kubelet's next sync
    (about a minute): until then the sidecar answers 503 auth_not_configured (fails closed)."""
    import urllib.error
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": {}}).encode()
    request_headers = {**headers, "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                       "MCP-Protocol-Version": "2025-11-25"}
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=request_headers), timeout=10):
                return
        except urllib.error.HTTPError as err:
            if err.code != 503 or time.monotonic() > deadline:
                return  # anything but "no token yet" is the caller's to see
        except OSError:
            if time.monotonic() > deadline:
                return
        time.sleep(1)


async def _mcp_calls(url: str, calls: list[tuple[str, dict]], headers: dict | None) -> dict:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    out: dict[str, Any] = {}
    async with httpx2.AsyncClient(headers=headers or {}, timeout=30) as http, \
            Client(streamable_http_client(url, http_client=http)) as client:
        out["tools"] = [t.name for t in (await client.list_tools()).tools]
        for name, arguments in calls:
            result = await client.call_tool(name, arguments)
            text = [c.text for c in result.content if hasattr(c, "text")]
            out[name] = {"structured": result.structured_content, "text": text, "is_error": result.is_error}
    return out


def mcp_calls(url: str, *calls: tuple[str, dict], headers: dict | None = None) -> dict:
    """One MCP session with our own client (the ``mcp`` SDK): tools/list, then each tools/call.
    ``headers``: ``auth_headers(cp, namespace)`` (auth is on by default)."""
    if headers:
        wait_token_accepted(url, headers)
    return asyncio.run(_mcp_calls(url, list(calls), headers))


def inspector(url: str, *args: str, home: Path) -> dict:
    """The MCP Inspector CLI (npm @modelcontextprotocol/inspector), a client we did not write."""
    from tests.support.inspector import run_inspector

    return run_inspector(url, *args, home=home, timeout=180)
