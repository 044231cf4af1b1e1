"""``mcp-sidecar connect``: from a labelled workload to a working MCP client in one step.

Resolves the workload (or Service) to its companion ``<workload>-mcp`` Service, checks it has ready
endpoints, reads the bearer token with the *user's* credentials, port-forwards to the Service and
prints ready-to-paste client setup (Claude Code, MCP Inspector, optionally a ``.mcp.json`` entry).

Port-forwarding goes through ``kubectl port-forward svc/...``, not the Python client's
``portforward``: the client only forwards to a pod (we would pick one and re-implement kubectl's
Service resolution), opens one websocket per local TCP connection with our own byte pump (an MCP
client keeps a POST and an SSE GET open at once), and is the less exercised path; everyone with a
kubeconfig has kubectl, and ``kubectl port-forward`` is the mechanism users already trust.

Exit codes (README "Commands"): 0 forwarded and stopped with Ctrl-C; 2 usage, kubeconfig or an
unreadable ``.mcp.json``; 3 no companion Service; 4 no ready endpoint; 5 forbidden (RBAC);
6 token Secret missing; 7 port-forward failed (no kubectl, or it exited).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TextIO
from urllib.parse import quote

from webhook.engine.constants import LABEL_BACKEND, SIDECAR_PORT_NAME, TOKEN_SECRET_KEY, TOKEN_SECRET_NAME
from webhook.operator.companion import LABEL_COMPANION_OF, MCP_SERVICE_PORT, companion_name
from webhook.cli.endpoints import (
    LABEL_SERVICE_NAME,
    MCP_PATH,
    auth_of,
    get_json,
    list_path,
    ready_addresses,
    sidecar_port,
    sidecar_ready,
)
from webhook.engine.pod_audit import sidecar_of

EXIT_USAGE, EXIT_NO_SERVICE, EXIT_NOT_READY, EXIT_FORBIDDEN, EXIT_NO_SECRET, EXIT_FORWARD = 2, 3, 4, 5, 6, 7
TOKEN_PLACEHOLDER = "$MCP_TOKEN"
PREFERRED_LOCAL_PORT = 9000
WORKLOAD_KINDS = {"statefulset": ("apps/v1", "statefulsets", "StatefulSet"), "sts": ("apps/v1", "statefulsets", "StatefulSet"),
                  "deployment": ("apps/v1", "deployments", "Deployment"), "deploy": ("apps/v1", "deployments", "Deployment"),
                  "daemonset": ("apps/v1", "daemonsets", "DaemonSet"), "ds": ("apps/v1", "daemonsets", "DaemonSet")}
SERVICE_KINDS = {"svc", "service", "services"}
POD_KINDS = {"pod", "po", "pods"}


class ConnectError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message[:1000])
        self.code = code


def clip(text: Any, limit: int = 200) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def _api_failure(exc: Exception, verb: str, resource: str, namespace: str, name: str = "") -> ConnectError:
    """One line for an API error; 401/403 name the verb and resource the user's RBAC lacks."""
    what = f"{resource}/{name}" if name else resource
    status = _status(exc)
    if status in (401, 403):
        return ConnectError(EXIT_FORBIDDEN, f"forbidden: your credentials cannot {verb} {what} in namespace {namespace} "
                                            f"(RBAC: verb '{verb}' on resource '{resource}'; check with: kubectl auth can-i "
                                            f"{verb} {resource} -n {namespace})")
    if status is not None:
        return ConnectError(EXIT_USAGE, f"cannot {verb} {what} in namespace {namespace}: {status} {clip(getattr(exc, 'reason', ''))}")
    return ConnectError(EXIT_USAGE, f"cannot {verb} {what} in namespace {namespace}: cluster unreachable ({type(exc).__name__}: {clip(exc)})")


def _get(api: Any, path: str, verb_resource: tuple[str, str], namespace: str, name: str) -> dict[str, Any] | None:
    """The object, or None on 404."""
    try:
        return get_json(api, path)
    except Exception as exc:
        if _status(exc) == 404:
            return None
        raise _api_failure(exc, *verb_resource, namespace, name) from None


def _service(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    return _get(api, f"{list_path('services', namespace)}/{quote(name, safe='')}", ("get", "services"), namespace, name)


def _is_mcp_service(svc: Mapping[str, Any]) -> bool:
    return LABEL_COMPANION_OF in ((svc.get("metadata") or {}).get("labels") or {}) or any(
        p.get("name") == SIDECAR_PORT_NAME for p in (svc.get("spec") or {}).get("ports") or [])


@dataclass
class Target:
    """A Service (the usual case) or, with ``pod/NAME``, one injected pod (a bare pod has no Service)."""

    namespace: str
    service: dict[str, Any] | None
    workload: str
    pod: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return (self.service if self.service is not None else self.pod or {})["metadata"]["name"]

    @property
    def ref(self) -> str:
        return f"{'svc' if self.service is not None else 'pod'}/{self.name}"

    @property
    def port(self) -> int:
        if self.service is None:
            return sidecar_port(self.pod or {}) or MCP_SERVICE_PORT
        return next((p["port"] for p in self.service["spec"].get("ports") or [] if p.get("name") == SIDECAR_PORT_NAME),
                    MCP_SERVICE_PORT)


def resolve(api: Any, namespace: str, ref: str) -> Target:
    """WORKLOAD, SERVICE or KIND/NAME -> the companion Service (or a Service with a port named mcp)."""
    kind, _, name = ref.rpartition("/")
    kind = kind.lower()
    if not name or (kind and kind not in SERVICE_KINDS and kind not in WORKLOAD_KINDS and kind not in POD_KINDS):
        raise ConnectError(EXIT_USAGE, f"cannot connect to {clip(ref)!r}: give a workload or Service name, or "
                                       "statefulset/NAME, deployment/NAME, daemonset/NAME, svc/NAME, pod/NAME")
    if kind in POD_KINDS:
        pod = _get(api, f"{list_path('pods', namespace)}/{quote(name, safe='')}", ("get", "pods"), namespace, name)
        if pod is None:
            raise ConnectError(EXIT_NO_SERVICE, f"no pod {clip(name)} in namespace {namespace} (see: mcp-sidecar ls -n {namespace})")
        if sidecar_of(pod) is None:
            raise ConnectError(EXIT_NO_SERVICE, f"pod {namespace}/{clip(name)} has no mcp-sidecar container "
                                                f"(why: mcp-sidecar check-inject {clip(name)} -n {namespace})")
        return Target(namespace, None, name, pod)
    candidates = [name, companion_name(name)] if kind in SERVICE_KINDS or not kind else [companion_name(name)]
    for candidate in dict.fromkeys(candidates):
        svc = _service(api, namespace, candidate)
        if svc is not None and _is_mcp_service(svc):
            labels = svc["metadata"].get("labels") or {}
            return Target(namespace, svc, labels.get(LABEL_COMPANION_OF) or name)
    raise ConnectError(EXIT_NO_SERVICE, _no_service_message(api, namespace, kind, name))


def _no_service_message(api: Any, namespace: str, kind: str, name: str) -> str:
    companion = companion_name(name)
    found = None
    for k in ([kind] if kind in WORKLOAD_KINDS else ["statefulset", "deployment", "daemonset"]):
        group, resource, kind_name = WORKLOAD_KINDS[k]
        try:
            if get_json(api, f"{list_path(resource, namespace, group)}/{quote(name, safe='')}"):
                found = (resource, kind_name)
                break
        except Exception:
            continue  # 404, or no right to read workloads: the generic hint below still applies
    if found is None:
        return (f"no MCP Service for {clip(name)!r} in namespace {namespace}: neither a Service {clip(name)} with a port named "
                f"'{SIDECAR_PORT_NAME}' nor a companion Service {clip(companion)} exists (see: mcp-sidecar ls -n {namespace})")
    resource, kind_name = found
    return (f"{kind_name} {name} has no companion Service {companion} in namespace {namespace}: label it so the operator "
            f"injects the sidecar and creates the Service: kubectl label {resource[:-1]} {name} -n {namespace} "
            f"{LABEL_BACKEND}=redis (or elasticsearch); if it is labelled, check that the operator runs "
            f"(its companion Services are on by default)")


def pods_of(api: Any, target: Target) -> list[dict[str, Any]]:
    selector = target.service["spec"].get("selector") or {}
    if not selector:
        return []
    try:
        return get_json(api, list_path("pods", target.namespace),
                        labelSelector=",".join(f"{k}={v}" for k, v in sorted(selector.items())))["items"]
    except Exception as exc:
        raise _api_failure(exc, "list", "pods", target.namespace) from None


def ready_endpoints(api: Any, target: Target) -> list[dict[str, Any]]:
    try:
        slices = get_json(api, list_path("endpointslices", target.namespace, "discovery.k8s.io/v1"),
                          labelSelector=f"{LABEL_SERVICE_NAME}={target.name}")["items"]
    except Exception as exc:
        raise _api_failure(exc, "list", "endpointslices.discovery.k8s.io", target.namespace) from None
    return ready_addresses(slices)


def _pod_state(pod: Mapping[str, Any]) -> str:
    name = clip(pod["metadata"]["name"], 80)
    if pod["metadata"].get("deletionTimestamp"):
        return f"{name} (terminating)"
    if sidecar_of(pod) is None:
        return f"{name} (no mcp-sidecar container: not injected, see mcp-sidecar check-inject {name})"
    phase = (pod.get("status") or {}).get("phase") or "Unknown"
    if phase != "Running":
        return f"{name} ({phase})"
    return f"{name} (mcp-sidecar {'ready' if sidecar_ready(pod) else 'not ready'})"


def not_ready_message(target: Target, pods: list[dict[str, Any]]) -> str:
    head = f"Service {target.namespace}/{target.name} has no ready endpoint on port '{SIDECAR_PORT_NAME}'"
    if not pods:
        selector = ",".join(f"{k}={v}" for k, v in sorted((target.service["spec"].get("selector") or {}).items()))
        return f"{head}: no pod matches its selector {clip(selector)}"
    states = [_pod_state(p) for p in pods[:5]]
    more = f" and {len(pods) - 5} more" if len(pods) > 5 else ""
    return f"{head}: pods {', '.join(states)}{more} (kubectl describe pod -n {target.namespace} ...)"


def auth_secret(api: Any, target: Target, endpoints: list[dict[str, Any]], pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(Secret, key) of the pod the Service routes to; None when its sidecar runs without auth."""
    by_name = {p["metadata"]["name"]: p for p in pods}
    for endpoint in endpoints:
        pod = by_name.get(((endpoint.get("targetRef") or {}).get("name")) or "")
        if pod is not None and sidecar_of(pod) is not None:
            return auth_of(pod)
    injected = [p for p in pods if sidecar_of(p) is not None]
    return auth_of(injected[0]) if injected else (TOKEN_SECRET_NAME, TOKEN_SECRET_KEY)


def read_token(api: Any, namespace: str, secret: str, key: str) -> str:
    path = f"{list_path('secrets', namespace)}/{quote(secret, safe='')}"
    try:
        body = get_json(api, path)
    except Exception as exc:
        if _status(exc) == 404:
            raise ConnectError(EXIT_NO_SECRET, f"the token Secret {namespace}/{clip(secret)} does not exist: the sidecars refuse "
                                               f"every MCP call until it does. The operator creates {TOKEN_SECRET_NAME}; "
                                               f"or create it: mcp-sidecar rotate-token -n {namespace} --secret {clip(secret)} "
                                               f"--key {clip(key)}") from None
        failure = _api_failure(exc, "get", "secrets", namespace, secret)
        if failure.code == EXIT_FORBIDDEN:
            failure = ConnectError(EXIT_FORBIDDEN, f"{failure}; or connect with --no-token and set $MCP_TOKEN yourself")
        raise failure from None
    raw = (body.get("data") or {}).get(key)
    if raw is None:
        raise ConnectError(EXIT_NO_SECRET, f"the token Secret {namespace}/{clip(secret)} has no key {clip(key)!r}")
    try:
        token = base64.b64decode(raw).decode("utf-8").strip()
    except (ValueError, UnicodeDecodeError):
        token = ""
    if not token or any(ord(c) < 0x21 or ord(c) == 0x7F for c in token):
        raise ConnectError(EXIT_NO_SECRET, f"the token in Secret {namespace}/{clip(secret)} (key {clip(key)}) is empty or "
                                           "not printable: rotate it with mcp-sidecar rotate-token")
    return token


# ---- client setup ---------------------------------------------------------------------------------


def header_arg(token: str | None) -> str | None:
    """The ``--header`` shell argument: quoted literally, or with ``$MCP_TOKEN`` left for the shell."""
    if token is None:
        return None
    if token == TOKEN_PLACEHOLDER:
        return f'"Authorization: Bearer {TOKEN_PLACEHOLDER}"'
    return shlex.quote(f"Authorization: Bearer {token}")


def setup_text(name: str, url: str, token: str | None, *, placeholder_hint: str = "") -> str:
    header = header_arg(token)
    extra = f" --header {header}" if header else ""
    lines = [placeholder_hint] if placeholder_hint else []
    lines += ["Claude Code:", f"  claude mcp add --transport http {shlex.quote(name)} {url}{extra}",
             "MCP Inspector (CLI):",
             f"  npx @modelcontextprotocol/inspector --cli {url} --transport http{extra} --method tools/list"]
    return "\n".join(lines) + "\n"


def load_mcp_json(path: Path) -> dict[str, Any]:
    """The file's object ({} when absent); anything we could not merge into is an error, never overwritten."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError) as exc:
        raise ConnectError(EXIT_USAGE, f"cannot merge into {path}: not readable JSON ({clip(exc)}); left unchanged") from None
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers", {}), dict):
        raise ConnectError(EXIT_USAGE, f"cannot merge into {path}: expected an object with an 'mcpServers' object; left unchanged")
    return data


def merge_mcp_json(path: Path, name: str, url: str, token: str | None) -> None:
    """Add or replace one server in ``path`` (Claude Code's ``.mcp.json``), keeping every other key and
    server; written atomically with mode 0600 since it may hold the token."""
    data = load_mcp_json(path)
    entry: dict[str, Any] = {"type": "http", "url": url}
    if token is not None:
        value = "${MCP_TOKEN}" if token == TOKEN_PLACEHOLDER else token
        entry["headers"] = {"Authorization": f"Bearer {value}"}
    data.setdefault("mcpServers", {})[name] = entry
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mcp.json.", dir=directory)  # mkstemp creates it 0600
    except OSError as exc:
        raise ConnectError(EXIT_USAGE, f"cannot write {path}: {clip(exc.strerror or exc)}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---- port-forward ---------------------------------------------------------------------------------


def pick_local_port(requested: int | None) -> int:
    """``--port``, else 9000 when free (a stable URL for .mcp.json), else 0 (kubectl picks one)."""
    if requested is not None:
        return requested
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", PREFERRED_LOCAL_PORT))
            return PREFERRED_LOCAL_PORT
        except OSError:
            return 0


FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


def start_port_forward(kubectl: str, kube_args: list[str], target: Target, local_port: int,
                       timeout: float = 30) -> tuple[subprocess.Popen, int]:
    argv = [kubectl, *kube_args, "port-forward", "-n", target.namespace, "--address", "127.0.0.1",
            target.ref, f"{local_port or ''}:{target.port}"]
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        raise ConnectError(EXIT_FORWARD, f"cannot run {clip(kubectl)}: {clip(exc.strerror or exc)}") from None
    found: list[int] = []
    stderr_tail: list[str] = []

    def read_stdout() -> None:
        for line in proc.stdout:
            m = FORWARDING.search(line)
            if m and not found:
                found.append(int(m.group(1)))

    def read_stderr() -> None:
        for line in proc.stderr:  # kubectl logs every forwarded connection's errors here: keep only the tail
            stderr_tail.append(line.rstrip()[:300])
            del stderr_tail[:-5]

    threading.Thread(target=read_stdout, daemon=True).start()
    threading.Thread(target=read_stderr, daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while not found:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                time.sleep(0.1)
                detail = " | ".join(stderr_tail) or f"no 'Forwarding from' line within {timeout:.0f}s"
                code = EXIT_FORBIDDEN if "forbidden" in detail.lower() else EXIT_FORWARD
                hint = " (RBAC: port-forward needs verb 'create' on resource 'pods/portforward')" if code == EXIT_FORBIDDEN else ""
                raise ConnectError(code, f"kubectl port-forward {target.ref} failed: {clip(detail, 400)}{hint}")
            time.sleep(0.05)
    except BaseException:
        stop(proc)  # Ctrl-C while waiting: kubectl runs in its own session and would outlive us
        raise
    proc.stderr_tail = stderr_tail  # type: ignore[attr-defined]
    return proc, found[0]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---- the command ----------------------------------------------------------------------------------


@dataclass
class ConnectOptions:
    ref: str
    namespace: str
    port: int | None = None
    write_mcp_json: str | None = None
    name: str | None = None
    no_token: bool = False
    kubeconfig: str | None = None
    context: str | None = None
    kubectl: str | None = None


def prepare(api: Any, opts: ConnectOptions) -> tuple[Target, tuple[str, str] | None, str | None]:
    """Everything before the port-forward: (target, auth Secret or None, token / placeholder / None)."""
    target = resolve(api, opts.namespace, opts.ref)
    if target.pod is not None:
        if not sidecar_ready(target.pod) or target.pod["metadata"].get("deletionTimestamp"):
            raise ConnectError(EXIT_NOT_READY, f"pod {target.namespace}/{_pod_state(target.pod)} is not ready to serve MCP")
        auth = auth_of(target.pod)
    else:
        endpoints = ready_endpoints(api, target)
        pods = pods_of(api, target)
        if not endpoints:
            raise ConnectError(EXIT_NOT_READY, not_ready_message(target, pods))
        auth = auth_secret(api, target, endpoints, pods)
    if auth is None:
        return target, None, None
    token = TOKEN_PLACEHOLDER if opts.no_token else read_token(api, opts.namespace, *auth)
    return target, auth, token


def run_connect(api: Any, opts: ConnectOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        target, auth, token = prepare(api, opts)
        kubectl = opts.kubectl or shutil.which("kubectl")
        if not kubectl:
            raise ConnectError(EXIT_FORWARD, "kubectl is not on PATH: connect port-forwards with kubectl port-forward "
                                             "(install kubectl, or give --kubectl PATH)")
        kube_args = [*(["--kubeconfig", opts.kubeconfig] if opts.kubeconfig else []),
                     *(["--context", opts.context] if opts.context else [])]
        name = opts.name or target.workload
        mcp_json = Path(opts.write_mcp_json) if opts.write_mcp_json else None
        if mcp_json is not None:
            load_mcp_json(mcp_json)  # fail before forwarding, not after
            if not (mcp_json.parent if str(mcp_json.parent) else Path(".")).is_dir():
                raise ConnectError(EXIT_USAGE, f"cannot write {mcp_json}: no directory {mcp_json.parent}")
        proc, port = start_port_forward(kubectl, kube_args, target, pick_local_port(opts.port))
    except ConnectError as exc:
        print(f"error: {exc}", file=err)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted before the port-forward was up", file=err)
        return 130
    url = f"http://127.0.0.1:{port}{MCP_PATH}"
    try:
        print(f"Forwarding {url} -> {target.ref}:{target.port} in namespace {target.namespace} "
              f"(auth: {'none' if auth is None else f'token from Secret {auth[0]}'}). Ctrl-C to stop.\n", file=out)
        hint = ""
        if token == TOKEN_PLACEHOLDER:
            hint = (f"Set MCP_TOKEN first: export MCP_TOKEN=$(kubectl get secret {auth[0]} -n {target.namespace} "
                    f"-o jsonpath='{{.data.{auth[1]}}}' | base64 -d)")
        out.write(setup_text(name, url, token, placeholder_hint=hint))
        if mcp_json is not None:
            merge_mcp_json(mcp_json, name, url, token)
            print(f"Wrote server {name!r} to {mcp_json} (mode 0600; other servers kept).", file=out)
        out.flush()
        code = proc.wait()
        tail = " | ".join(getattr(proc, "stderr_tail", []))
        print(f"error: kubectl port-forward exited ({code}): {clip(tail, 400) or 'no message'}", file=err)
        return EXIT_FORWARD
    except KeyboardInterrupt:
        return 0
    except ConnectError as exc:
        print(f"error: {exc}", file=err)
        return exc.code
    finally:
        stop(proc)
