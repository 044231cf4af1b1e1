"""The kopf operator: label propagation, companion Services, missed/stale detection and healing.

Decisions come from pure modules (``propagation``, ``companion``, ``pod_audit``); this module only
watches (kopf ``on.event`` handlers: they store no state in the objects, so Helm's view of a
workload is never cluttered), reads and writes through the Kubernetes API, posts Events and counts
metrics. Only the Lease holder acts (``webhook.operator.leader``) when several replicas run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from webhook.engine.config import InjectorConfig
from webhook.engine.constants import LABEL_BACKEND, TOKEN_SECRET_KEY, TOKEN_SECRET_NAME
from webhook.engine.pod_audit import INJECTED, MISSED, PodAudit, audit_pod
from webhook.operator.companion import LABEL_COMPANION_OF, companion_name, desired_service, service_differs, wants_companion
from webhook.operator.leader import LeaseElector
from webhook.operator.propagation import WORKLOAD_KINDS, plan_propagation
from webhook.operator.token_secret import TokenSecrets
from webhook.shared.metrics import Metrics

log = logging.getLogger("webhook.operator")

_PLURALS = {kind: kind.lower() + "s" for kind in WORKLOAD_KINDS}  # statefulsets, deployments, daemonsets
_COMPONENT = "mcp-sidecar-operator"


@dataclass
class OperatorOptions:
    companion_service: bool = True
    heal: bool = False
    heal_stale: bool = False
    #: minimum seconds between two evictions (healing is a trickle, never a stampede)
    heal_interval: float = 10.0
    #: a missed pod younger than this is left alone (its creation may still be in flight)
    heal_grace: float = 10.0
    resync_seconds: float = 60.0
    leader_election: bool = True
    lease_namespace: str = "default"
    lease_name: str = "mcp-sidecar-injector-operator"
    #: watch and act only in these namespaces (Roles instead of ClusterRoles); empty: cluster-wide
    namespaces: tuple[str, ...] = ()
    #: never act here, whatever is labelled: rewriting kube-system's or the injector's own pod
    #: templates is exactly the takeover the operator's rights must not allow
    excluded_namespaces: tuple[str, ...] = ("kube-system",)

    def acts_in(self, namespace: str | None) -> bool:
        if not namespace or namespace in self.excluded_namespaces:
            return False
        return not self.namespaces or namespace in self.namespaces


class Operator:
    """Everything the handlers need, injectable for tests (API client, config, metrics)."""

    def __init__(self, api: client.ApiClient, config: Callable[[], InjectorConfig], metrics: Metrics, options: OperatorOptions):
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.config = config
        self.metrics = metrics
        self.options = options
        self._reported: dict[str, str] = {}  # pod uid -> condition already announced by an Event
        self._namespace_cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._last_eviction = 0.0
        self._retries: dict[str, threading.Timer] = {}  # pod uid -> pending re-check (healing)
        self._lock = threading.Lock()
        self.token_secrets = TokenSecrets()

    # -- workloads ------------------------------------------------------------------------------

    def reconcile_workload(self, workload: Mapping[str, Any]) -> None:
        kind = workload["kind"]
        meta = workload["metadata"]
        if not self.options.acts_in(meta.get("namespace")):
            return
        # The Secret first: the pods the template patch below rolls in then start with their token
        # (a pod that starts before it waits ~1 min for the kubelet's next sync, failing closed).
        self.ensure_token_secret(kind, workload)
        plan = plan_propagation(workload)
        if plan.patch is not None:
            # Watch events can be older than our own last patch: decide again on the live object so
            # a change is made (and announced) once.
            reader = getattr(self.apps, f"read_namespaced_{_snake(kind)}")
            workload = self.api.sanitize_for_serialization(reader(meta["name"], meta["namespace"]))
            workload.setdefault("kind", kind)
            workload.setdefault("apiVersion", "apps/v1")
            plan = plan_propagation(workload)
        if plan.patch is not None:
            patcher = getattr(self.apps, f"patch_namespaced_{_snake(kind)}")
            workload = self.api.sanitize_for_serialization(patcher(meta["name"], meta["namespace"], plan.patch))
            self.metrics.propagations.labels(action=plan.action).inc()
            self.post_event(kind, meta, "Normal", "MCPLabelPropagated", plan.message)
            log.info("%s %s/%s: %s", kind, meta["namespace"], meta["name"], plan.message)
        elif plan.action == "conflict":
            self.post_event(kind, meta, "Warning", "MCPLabelConflict", plan.message, once_key=f"{meta.get('uid')}:conflict")
        if self.options.companion_service:
            self.reconcile_companion(workload)

    def ensure_token_secret(self, kind: str, obj: Mapping[str, Any]) -> None:
        """A labelled workload's or pod's sidecars need their namespace's token Secret (webhook.operator.token_secret)."""
        meta = obj.get("metadata") or {}
        template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
        if LABEL_BACKEND not in (meta.get("labels") or {}) and LABEL_BACKEND not in (template.get("labels") or {}):
            return
        namespace = str(meta.get("namespace", ""))
        if self.token_secrets.ensure(self.core, namespace) == "created":
            self.post_event(kind, meta, "Normal", "MCPTokenSecretCreated",
                            f"created Secret {TOKEN_SECRET_NAME} (key {TOKEN_SECRET_KEY}): the bearer token of the MCP "
                            f"sidecars in {namespace}; rotate it with: mcp-sidecar rotate-token -n {namespace}")

    def reconcile_companion(self, workload: Mapping[str, Any]) -> None:
        meta = workload["metadata"]
        namespace = meta["namespace"]
        desired = desired_service(workload) if wants_companion(workload) else None
        name = companion_name(meta["name"])
        try:
            live = self.api.sanitize_for_serialization(self.core.read_namespaced_service(name, namespace))
        except ApiException as exc:
            if exc.status != 404:
                raise
            live = None
        ours = live is not None and (live["metadata"].get("labels") or {}).get(LABEL_COMPANION_OF) == meta["name"][:63]
        if desired is None:
            if ours:
                self.core.delete_namespaced_service(name, namespace)
                self.metrics.companion_services.labels(action="deleted").inc()
            return
        if live is None:
            try:
                self.core.create_namespaced_service(namespace, desired)
            except ApiException as exc:
                if exc.status == 403 and "NamespaceTerminating" in str(exc.body):
                    return  # the namespace is going away with the workload
                raise
            self.metrics.companion_services.labels(action="created").inc()
            log.info("created companion Service %s/%s", namespace, name)
        elif not ours:
            self.post_event(workload["kind"], meta, "Warning", "MCPServiceExists",
                            f"Service {name} exists and is not managed by mcp-sidecar-injector; no companion Service created",
                            once_key=f"{meta.get('uid')}:svc")
        elif service_differs(live, desired):
            self.core.patch_namespaced_service(name, namespace, {"spec": {"selector": desired["spec"]["selector"], "ports": desired["spec"]["ports"]}})
            self.metrics.companion_services.labels(action="updated").inc()

    # -- pods -------------------------------------------------------------------------------------

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        now = time.monotonic()
        cached = self._namespace_cache.get(namespace)
        if cached and now - cached[0] < 30:
            return cached[1]
        try:
            labels = self.core.read_namespace(namespace).metadata.labels or {}
        except ApiException as exc:
            log.warning("cannot read namespace %s (its opt-out label is unknown): %s", namespace[:253], _why(exc))
            labels = {}
        self._namespace_cache[namespace] = (now, labels)
        return labels

    def handle_pod(self, pod: Mapping[str, Any]) -> PodAudit:
        meta = pod.get("metadata") or {}
        self.ensure_token_secret("Pod", pod)
        row = audit_pod(pod, self.namespace_labels(meta.get("namespace", "")), self.config())
        condition = "missed" if row.state == MISSED else "stale" if row.stale else ""
        uid = str(meta.get("uid", ""))
        if not condition:
            self._reported.pop(uid, None)
            return row
        if self._reported.get(uid) != condition:
            self._reported[uid] = condition
            (self.metrics.missed_pods if condition == "missed" else self.metrics.stale_pods).inc()
            message = f"pod {meta.get('name')} has no MCP sidecar: {row.reason}" if condition == "missed" else f"pod {meta.get('name')}'s MCP sidecar is stale: {row.reason}"
            reason = "MCPSidecarMissed" if condition == "missed" else "MCPSidecarStale"
            self.post_event("Pod", meta, "Warning", reason, message)
            owner = _controller_ref(meta)
            if owner is not None:
                self.post_event(owner["kind"], {"name": owner["name"], "namespace": meta.get("namespace"), "uid": owner.get("uid")}, "Warning", reason, message)
        if self.options.heal and (condition == "missed" or self.options.heal_stale):
            self.maybe_evict(pod, condition)
        return row

    def maybe_evict(self, pod: Mapping[str, Any], condition: str) -> None:
        meta = pod["metadata"]
        if _controller_ref(meta) is None or not self.options.acts_in(meta.get("namespace")):
            return  # a bare pod would be gone for good: never evicted
        created = meta.get("creationTimestamp")
        if created:
            if isinstance(created, str):
                created = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
            age = (dt.datetime.now(dt.timezone.utc) - created).total_seconds()
            if age < self.options.heal_grace:
                self._retry_later(meta, self.options.heal_grace - age)
                return
        with self._lock:
            wait = self.options.heal_interval - (time.monotonic() - self._last_eviction)
            if wait <= 0:
                self._last_eviction = time.monotonic()
        if wait > 0:
            # One eviction per interval, but no pod waits for the next full resync (60 s) either:
            # look at it again when its turn comes.
            self._retry_later(meta, wait)
            return
        backend = (meta.get("labels") or {}).get(LABEL_BACKEND, "")
        if not self.injection_works(meta["namespace"], backend):
            self.metrics.evictions.labels(result="webhook-not-injecting").inc()
            log.info("not healing %s/%s: a dry-run pod is not injected right now (webhook down?)", meta["namespace"], meta["name"])
            return
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=meta["name"], namespace=meta["namespace"]))
        try:
            self.core.create_namespaced_pod_eviction(meta["name"], meta["namespace"], body)
        except ApiException as exc:
            result = "blocked" if exc.status == 429 else "error"  # 429: a PodDisruptionBudget says not now
            self.metrics.evictions.labels(result=result).inc()
            log.log(logging.WARNING if exc.status == 403 else logging.INFO, "eviction of %s/%s %s: %s",
                    meta["namespace"], meta["name"], result, _why(exc))
            return
        self.metrics.evictions.labels(result="evicted").inc()
        self.post_event("Pod", meta, "Normal", "MCPSidecarHealing", f"evicted so that its controller recreates it with the sidecar ({condition})")
        log.info("evicted %s pod %s/%s for re-injection", condition, meta["namespace"], meta["name"])

    def _retry_later(self, meta: Mapping[str, Any], delay: float) -> None:
        """Re-read the pod after ``delay`` seconds and handle it again (at most one timer per pod)."""
        uid = str(meta.get("uid", ""))
        with self._lock:
            if uid in self._retries:
                return
            timer = threading.Timer(max(delay, 0.0) + 0.1, self._retry, args=(meta["namespace"], meta["name"], uid))
            timer.daemon = True
            self._retries[uid] = timer
        timer.start()

    def _retry(self, namespace: str, name: str, uid: str) -> None:
        with self._lock:
            self._retries.pop(uid, None)
        try:
            pod = self.api.sanitize_for_serialization(self.core.read_namespaced_pod(name, namespace))
        except ApiException as exc:
            if exc.status == 403:
                log.warning("cannot re-read pod %s/%s for healing: %s", namespace, name, _why(exc))
            return  # gone (healed, deleted) or not readable: the resync will tell
        if (pod.get("metadata") or {}).get("uid") == uid:
            self.handle_pod(pod)

    def cancel_retries(self) -> None:
        with self._lock:
            timers, self._retries = list(self._retries.values()), {}
        for timer in timers:
            timer.cancel()

    def injection_works(self, namespace: str, backend: str) -> bool:
        """Would the API server inject a pod in ``namespace`` right now? (server-side dry run)

        Evicting a missed pod while the webhook is still unreachable would only recreate it
        uninjected; this probe makes healing wait until injection works again.
        """
        restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        probe = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "mcp-heal-probe-", "namespace": namespace, "labels": {LABEL_BACKEND: backend}},
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10", "securityContext": restricted,
                                "resources": {"requests": {"cpu": "1m", "memory": "4Mi"}, "limits": {"cpu": "1m", "memory": "4Mi"}}}],
            },
        }
        try:
            created = self.api.sanitize_for_serialization(self.core.create_namespaced_pod(namespace, probe, dry_run="All"))
        except ApiException as exc:
            if exc.status == 403 and "NamespaceTerminating" not in str(exc.body):
                log.warning("healing needs RBAC 'create pods' (a server-side dry run) in %s: %s", namespace, _why(exc))
            else:
                log.info("heal probe in %s failed: %s", namespace, _why(exc))
            return False
        containers = (created.get("spec") or {}).get("containers", []) + ((created.get("spec") or {}).get("initContainers") or [])
        return any(c.get("name") == "mcp-sidecar" for c in containers)

    def sweep(self) -> dict[str, int]:
        """Re-check every labelled pod (catches config changes that make sidecars stale)."""
        if self.options.namespaces:  # namespaced mode: no cluster-wide list right
            items = [p for ns in self.options.namespaces if self.options.acts_in(ns)
                     for p in self.api.sanitize_for_serialization(self.core.list_namespaced_pod(ns, label_selector=LABEL_BACKEND)).get("items", [])]
        else:
            items = self.api.sanitize_for_serialization(self.core.list_pod_for_all_namespaces(label_selector=LABEL_BACKEND)).get("items", [])
        pods = {"items": [p for p in items if self.options.acts_in((p.get("metadata") or {}).get("namespace"))]}
        counts: dict[str, int] = {}
        for pod in pods.get("items", []):
            row = self.handle_pod(pod)
            key = "stale" if row.state == INJECTED and row.stale else row.state
            counts[key] = counts.get(key, 0) + 1
        self.metrics.pods_by_state.clear()
        for state, count in counts.items():
            self.metrics.pods_by_state.labels(state=state).set(count)
        live = {p["metadata"].get("uid") for p in pods.get("items", [])}
        for uid in list(self._reported):
            if uid not in live:
                del self._reported[uid]
        return counts

    # -- events -----------------------------------------------------------------------------------

    def post_event(self, kind: str, meta: Mapping[str, Any], type_: str, reason: str, message: str, *, once_key: str | None = None) -> None:
        if once_key is not None:
            if self._reported.get(once_key) == reason:
                return
            self._reported[once_key] = reason
        now = dt.datetime.now(dt.timezone.utc)
        api_version = "v1" if kind == "Pod" else "apps/v1"
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta.get('name', 'object')}.", namespace=meta.get("namespace")),
            involved_object=client.V1ObjectReference(api_version=api_version, kind=kind, name=meta.get("name"), namespace=meta.get("namespace"), uid=meta.get("uid")),
            reason=reason, message=message[:1024], type=type_, first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component=_COMPONENT), reporting_component=_COMPONENT, reporting_instance=socket.gethostname(),
        )
        try:
            self.core.create_namespaced_event(meta.get("namespace"), event)
        except ApiException as exc:
            log.log(logging.WARNING if exc.status == 403 else logging.DEBUG, "could not post event %s: %s", reason, _why(exc))


def _why(exc: ApiException) -> str:
    """The API server's own message (an RBAC denial names the verb and resource), truncated."""
    try:
        message = json.loads(exc.body).get("message") if exc.body else None
    except (ValueError, AttributeError):
        message = None
    return f"{exc.status} {message or exc.reason}"[:300]


def _controller_ref(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def _snake(kind: str) -> str:
    return {"StatefulSet": "stateful_set", "Deployment": "deployment", "DaemonSet": "daemon_set"}[kind]


def build_registry(operator: Operator) -> kopf.OperatorRegistry:
    """kopf handlers bound to ``operator``; ``on.event`` keeps no state in the watched objects."""
    registry = kopf.OperatorRegistry()
    for kind, plural in _PLURALS.items():

        def on_workload(body: Any, type: str | None, _kind: str = kind, **_: Any) -> None:  # noqa: A002 (kopf's name)
            if type == "DELETED" or not operator.options.acts_in((body.get("metadata") or {}).get("namespace")):
                return  # DELETED: the companion Service is garbage-collected through its ownerReference
            workload = operator.api.sanitize_for_serialization(dict(body))
            workload.setdefault("kind", _kind)
            workload.setdefault("apiVersion", "apps/v1")
            operator.reconcile_workload(workload)

        kopf.on.event("apps", "v1", plural, registry=registry)(on_workload)

    def on_pod(body: Any, type: str | None, **_: Any) -> None:  # noqa: A002
        if type != "DELETED" and operator.options.acts_in((body.get("metadata") or {}).get("namespace")):
            operator.handle_pod(operator.api.sanitize_for_serialization(dict(body)))

    kopf.on.event("", "v1", "pods", labels={LABEL_BACKEND: kopf.PRESENT}, registry=registry)(on_pod)
    kopf.on.login(registry=registry)(lambda **_: connection_info(operator.api))
    return registry


def connection_info(api: client.ApiClient) -> kopf.ConnectionInfo:
    """kopf logs in with exactly the credentials our own client loaded (--kubeconfig or in-cluster)."""
    cfg = api.configuration
    authorization = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if authorization and cfg.api_key_prefix.get("authorization"):
        authorization = f"{cfg.api_key_prefix['authorization']} {authorization}"
    scheme, _, token = (authorization or "").partition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


class OperatorRunner:
    """Runs kopf (and the periodic sweep) in background threads while this replica leads."""

    def __init__(self, operator: Operator, on_fatal: Callable[[], None] | None = None):
        self.operator = operator
        # A crashed operator must never leave a Ready pod that holds the Lease and does nothing:
        # by default the process terminates itself (SIGTERM: the admission server drains, exits,
        # the container restarts and the Lease goes to another replica).
        self._on_fatal = on_fatal or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self._stop = threading.Event()
        self._kopf_stop: threading.Event | None = None
        self._threads: list[threading.Thread] = []
        self.ready = threading.Event()
        #: Our name for the Lease and for kopf. Passed to kopf explicitly: its own default asks
        #: getpass.getuser(), which raises KeyError in the image (UID 1000 has no passwd entry).
        self.identity = f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    def start(self) -> None:
        options = self.operator.options
        if options.leader_election:
            elector = LeaseElector(self.operator.api, options.lease_namespace, options.lease_name, self.identity)
            thread = threading.Thread(target=elector.run, args=(self._start_leading, self._stop_leading, self._stop), name="leader-election", daemon=True)
        else:
            thread = threading.Thread(target=self._start_leading, name="operator-start", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_leading(self) -> None:
        self._kopf_stop = threading.Event()
        kopf_stop = self._kopf_stop
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False  # we post our own, precise Events
        settings.scanning.disabled = True  # no CRD/namespace scanning: no RBAC on CRDs needed
        settings.peering.standalone = True
        registry = build_registry(self.operator)

        def run_kopf() -> None:
            try:
                namespaces = self.operator.options.namespaces
                asyncio.run(kopf.operator(registry=registry, settings=settings, clusterwide=not namespaces, namespaces=namespaces, standalone=True,
                                          identity=self.identity, stop_flag=kopf_stop, ready_flag=self.ready))
            except BaseException:
                log.exception("the operator (kopf) crashed")
            if not kopf_stop.is_set():
                log.critical("the operator stopped although it still leads: terminating so that the container "
                             "restarts and another replica takes the Lease")
                self.ready.clear()
                self._on_fatal()

        def run_sweeps() -> None:
            while not kopf_stop.wait(self.operator.options.resync_seconds):
                try:
                    self.operator.sweep()
                except Exception as exc:
                    log.warning("sweep failed: %s", exc)

        for target, name in ((run_kopf, "kopf"), (run_sweeps, "sweep")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _stop_leading(self) -> None:
        if self._kopf_stop is not None:
            self._kopf_stop.set()
        self.operator.cancel_retries()
        self.ready.clear()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._stop_leading()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def default_lease_namespace() -> str:
    return os.environ.get("POD_NAMESPACE", "default")
