"""The kopf operator: label propagation, companion Services, missed/stale detection and healing.

Decisions come from pure modules (``propagation``, ``companion``, ``pod_audit``); this module only
watches, reads and writes through the Kubernetes API, posts Events and counts metrics. Workloads
come through kopf (``on.event`` handlers: they store no state in the objects, so Helm's view of a
workload is never cluttered); labelled pods through our own label-selected list and watch
(``pod_watch``: kopf can only filter pods on the client, issue 12). Only the Lease holder acts
(``webhook.operator.leader``) when several replicas run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from webhook.engine.config import InjectorConfig
from webhook.engine.constants import LABEL_BACKEND, TOKEN_SECRET_KEY, TOKEN_SECRET_NAME
from webhook.engine.pod_audit import INJECTED, MISSED, audit_pod
from webhook.operator.events import CONDITION_REASONS, EventPoster, announced
from webhook.operator.pod_watch import PodWatch
from webhook.operator.companion import LABEL_COMPANION_OF, companion_name, desired_service, service_differs, wants_companion
from webhook.operator.leader import LeaseElector
from webhook.operator.propagation import WORKLOAD_KINDS, plan_propagation
from webhook.operator.token_secret import TokenSecrets
from webhook.shared.kube import list_pages, pods_path
from webhook.shared.metrics import Metrics

log = logging.getLogger("webhook.operator")

_PLURALS = {kind: kind.lower() + "s" for kind in WORKLOAD_KINDS}  # statefulsets, deployments, daemonsets


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


class Verdict(NamedTuple):
    """What ``audit_pod`` said about a pod, the part the operator keeps."""

    state: str
    stale: bool
    reason: str


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
        self._owners_told: set[tuple[str, str]] = set()  # (controller uid, condition) announced on the controller
        #: pod uid -> (resourceVersion, namespace labels, verdict, namespace), kept current by the pod
        #: watch: a resync re-judges only what changed
        self._verdicts: dict[str, tuple[str, tuple, Verdict, str]] = {}
        self._verdict_config: InjectorConfig | None = None
        #: the configuration of the last pass over every labelled pod (the watch's list or a full sweep)
        self._full_pass_config: InjectorConfig | None = None
        self._sweeps = 0
        self._namespace_cache: dict[str, tuple[float, dict[str, str], tuple]] = {}
        self._last_eviction = 0.0
        self._retries: dict[str, threading.Timer] = {}  # pod uid -> pending re-check (healing)
        self._lock = threading.Lock()
        self.token_secrets = TokenSecrets()
        self.events = EventPoster(api, why=_why)
        # Companion Services are reconciled by a worker of their own: at start every labelled
        # workload costs a Service read (and create), and a `kubectl label` must not wait behind them.
        self._companions = LatestPerKey(self._reconcile_companion_logged, name="companions")

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
            self._companions.put(str(meta.get("uid")), _companion_inputs(workload))

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

    def _reconcile_companion_logged(self, workload: Mapping[str, Any]) -> None:
        meta = workload.get("metadata") or {}
        try:
            self.reconcile_companion(workload)
        except ApiException as exc:
            log.warning("companion Service of %s %s/%s: %s", workload.get("kind"), meta.get("namespace"), meta.get("name"), _why(exc))

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
        return self._namespace(namespace)[0]

    def _namespace(self, namespace: str) -> tuple[dict[str, str], tuple]:
        """The namespace's labels (re-read after 30 s) and a comparable key of them."""
        now = time.monotonic()
        cached = self._namespace_cache.get(namespace)
        if cached and now - cached[0] < 30:
            return cached[1], cached[2]
        try:
            labels = self.core.read_namespace(namespace).metadata.labels or {}
        except ApiException as exc:
            log.warning("cannot read namespace %s (its opt-out label is unknown): %s", namespace[:253], _why(exc))
            labels = {}
        key = tuple(sorted(labels.items()))
        if cached and cached[2] == key:
            key = cached[2]  # the same tuple object: cached verdicts compare by identity first
        self._namespace_cache[namespace] = (now, labels, key)
        return labels, key

    def judge(self, pod: Mapping[str, Any]) -> Verdict:
        """``audit_pod``, remembered per pod resourceVersion, namespace labels and configuration."""
        meta = pod.get("metadata") or {}
        labels, key = self._namespace(meta.get("namespace", ""))
        config = self.config()
        if config is not self._verdict_config:  # a new configuration: every verdict may change (stale)
            self._verdicts, self._verdict_config = {}, config
        uid, version = str(meta.get("uid", "")), meta.get("resourceVersion")
        cached = self._verdicts.get(uid)
        if cached is not None and version and cached[0] == version and cached[1] == key:
            return cached[2]
        row = audit_pod(pod, labels, config)
        verdict = Verdict(row.state, row.stale, row.reason)
        if version and uid:
            self._verdicts[uid] = (version, key, verdict, sys.intern(str(meta.get("namespace", ""))))
        return verdict

    def handle_pod(self, pod: Mapping[str, Any]) -> Verdict:
        meta = pod.get("metadata") or {}
        self.ensure_token_secret("Pod", pod)
        row = self.judge(pod)
        condition = "missed" if row.state == MISSED else "stale" if row.stale else ""
        uid = str(meta.get("uid", ""))
        if not condition:
            self._reported.pop(uid, None)
            return row
        owner = _controller_ref(meta)
        with self._lock:  # the pod watch, the sweep and healing retries may judge the same pod at once
            announce = self._reported.get(uid) != condition
            self._reported[uid] = condition
            tell_owner = announce and owner is not None and (str(owner.get("uid")), condition) not in self._owners_told
            if tell_owner:
                self._owners_told.add((str(owner.get("uid")), condition))
        if announce:
            (self.metrics.missed_pods if condition == "missed" else self.metrics.stale_pods).inc()
            message = f"pod {meta.get('name')} has no MCP sidecar: {row.reason}" if condition == "missed" else f"pod {meta.get('name')}'s MCP sidecar is stale: {row.reason}"
            reason = CONDITION_REASONS[condition]
            self.post_event("Pod", meta, "Warning", reason, message)
            if tell_owner:
                # Once per controller and condition (not once per pod: 10 replicas, 10 identical
                # warnings on the StatefulSet), again once none of its pods is in that condition.
                self.post_event(owner["kind"], {"name": owner["name"], "namespace": meta.get("namespace"), "uid": owner.get("uid")}, "Warning", reason, message)
        if self.options.heal and (condition == "missed" or self.options.heal_stale):
            self.maybe_evict(pod, condition)
        return row

    def forget_pod(self, pod: Mapping[str, Any]) -> None:
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        self._reported.pop(uid, None)
        self._verdicts.pop(uid, None)

    def remember_announced(self) -> None:
        """Take what our Events in the cluster already say as announced (no repeat after a restart)."""
        started = time.monotonic()
        scopes = [ns for ns in self.options.namespaces if self.options.acts_in(ns)]
        try:
            found = announced(self.api, scopes)
        except ApiException as exc:
            log.warning("cannot list this operator's earlier Events (conditions will be announced again): %s", _why(exc))
            return
        except Exception as exc:
            log.warning("cannot list this operator's earlier Events (conditions will be announced again): %s", exc)
            return
        with self._lock:
            for uid, condition in found.pods.items():
                self._reported.setdefault(uid, condition)
            self._owners_told |= found.owners
            for key, reason in found.once.items():
                self._reported.setdefault(key, reason)
        log.info("%d earlier Events of this operator read in %.1f s: %d pods already announced",
                 found.events, time.monotonic() - started, len(found.pods))

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

    #: every this many resyncs, one full list anyway (a safety net under the watch)
    FULL_SWEEP_EVERY = 10

    def full_pass_done(self, config: InjectorConfig) -> None:
        """Every labelled pod was judged with ``config`` (the pod watch's list)."""
        if config is self.config():
            self._full_pass_config = config

    def sweep(self) -> dict[str, int]:
        """The periodic resync: counts by state, and staleness after a configuration change.

        The pod watch keeps every verdict current, so a resync normally reads no pod: it counts the
        remembered verdicts and re-lists only namespaces whose labels changed (issue 12: re-listing
        10,000 pods cost ~7 CPU-s every minute). A new configuration, and every FULL_SWEEP_EVERY-th
        resync, re-list every labelled pod (``full_sweep``).
        """
        self._sweeps += 1
        config = self.config()
        if config is not self._full_pass_config or self._sweeps % self.FULL_SWEEP_EVERY == 0:
            return self.full_sweep()
        pairs = {(entry[3], entry[1]) for entry in list(self._verdicts.values())}
        changed = {namespace for namespace, key in pairs if self._namespace(namespace)[1] != key}
        for namespace in sorted(changed):  # an opt-out label came or went: judge its pods again
            for items, _ in list_pages(self.api, pods_path(namespace), label_selector=LABEL_BACKEND):
                for pod in items:
                    self.handle_pod(pod)
        counts: dict[str, int] = {}
        for entry in list(self._verdicts.values()):
            verdict = entry[2]
            key = "stale" if verdict.state == INJECTED and verdict.stale else verdict.state
            counts[key] = counts.get(key, 0) + 1
        self._set_state_counts(counts)
        return counts

    def _set_state_counts(self, counts: Mapping[str, int]) -> None:
        self.metrics.pods_by_state.clear()
        for state, count in counts.items():
            self.metrics.pods_by_state.labels(state=state).set(count)

    def full_sweep(self) -> dict[str, int]:
        """Re-check every labelled pod: a paginated plain-JSON list (one page in memory); pods whose
        resourceVersion, namespace labels and configuration are unchanged keep their verdict."""
        config = self.config()
        # namespaced mode: no cluster-wide list right
        scopes = [ns for ns in self.options.namespaces if self.options.acts_in(ns)] if self.options.namespaces else [None]
        counts: dict[str, int] = {}
        live: set[str] = set()
        owners: set[tuple[str, str]] = set()
        for scope in scopes:
            for items, _ in list_pages(self.api, pods_path(scope), label_selector=LABEL_BACKEND):
                for pod in items:
                    meta = pod.get("metadata") or {}
                    if not self.options.acts_in(meta.get("namespace")):
                        continue
                    row = self.handle_pod(pod)
                    key = "stale" if row.state == INJECTED and row.stale else row.state
                    counts[key] = counts.get(key, 0) + 1
                    live.add(str(meta.get("uid", "")))
                    owner = _controller_ref(meta)
                    if owner is not None and key in ("missed", "stale"):
                        owners.add((str(owner.get("uid")), key))
        self._set_state_counts(counts)
        self.full_pass_done(config)
        with self._lock:
            for uid in list(self._reported):
                if ":" not in uid and uid not in live:
                    del self._reported[uid]
            self._owners_told &= owners
        for uid in list(self._verdicts):
            if uid not in live:
                self._verdicts.pop(uid, None)
        return counts

    # -- events -----------------------------------------------------------------------------------

    def post_event(self, kind: str, meta: Mapping[str, Any], type_: str, reason: str, message: str, *, once_key: str | None = None) -> None:
        if once_key is not None:
            if self._reported.get(once_key) == reason:
                return
            self._reported[once_key] = reason
        self.events.submit(kind, meta, type_, reason, message)


class LatestPerKey:
    """A queue keeping only the latest item per key, drained in order by one lazily started thread."""

    def __init__(self, handle: Callable[[Any], None], *, name: str):
        self._handle = handle
        self._name = name
        self._pending: dict[str, Any] = {}  # insertion-ordered; a newer item replaces its key's older one
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, key: str, item: Any) -> None:
        with self._ready:
            self._pending.pop(key, None)
            self._pending[key] = item
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name=self._name, daemon=True)
                self._thread.start()
            self._ready.notify()

    def _drain(self) -> None:
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
                key = next(iter(self._pending))
                item = self._pending.pop(key)
            try:
                self._handle(item)
            except Exception:
                log.exception("%s: handling %s failed", self._name, key)

    def idle(self) -> bool:
        with self._ready:
            return not self._pending


def _companion_inputs(workload: Mapping[str, Any]) -> dict[str, Any]:
    """The few fields the companion Service depends on: a queued item is ~1 KiB, not the whole
    workload (1,000 StatefulSets at start queued 30+ MiB of them)."""
    meta = workload.get("metadata") or {}
    spec = workload.get("spec") or {}
    template = (spec.get("template") or {}).get("metadata") or {}
    return {
        "apiVersion": workload.get("apiVersion", "apps/v1"), "kind": workload.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "spec": {"selector": spec.get("selector"), "template": {"metadata": {"labels": template.get("labels") or {}}}},
    }


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
    """kopf handlers for the workloads, bound to ``operator``; ``on.event`` keeps no state in the watched objects."""
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

    # Pods are not watched through kopf: its labels= filter is client-side (webhook.operator.pod_watch).
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
        # kopf logs "Handler ... succeeded" for every workload event (thousands at start): keep its warnings only
        objects_log = logging.getLogger("kopf.objects")
        objects_log.setLevel(max(objects_log.getEffectiveLevel(), logging.WARNING))
        self._kopf_stop = threading.Event()
        kopf_stop = self._kopf_stop
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False  # we post our own, precise Events
        settings.scanning.disabled = True  # no CRD/namespace scanning: no RBAC on CRDs needed
        settings.peering.standalone = True
        registry = build_registry(self.operator)
        operator = self.operator
        # a confined operator (--namespace) lists and watches only its namespaces, never cluster-wide
        scopes: list[str | None] = [ns for ns in operator.options.namespaces if operator.options.acts_in(ns)] if operator.options.namespaces else [None]

        def run_pods() -> None:
            # Already announced first, so that the start-up pass repeats no Event of an earlier leader.
            operator.remember_announced()
            if kopf_stop.is_set():
                return
            started = time.monotonic()
            pending = set(scopes)

            config = operator.config()

            def listed(scope: str | None, count: int, seconds: float) -> None:
                if scope in pending:
                    pending.discard(scope)
                    if not pending:
                        operator.full_pass_done(config)
                    log.info("start-up pass: %d labelled pods in %s judged in %.1f s", count, scope or "all namespaces", seconds)
                    if not pending and len(scopes) > 1:
                        log.info("start-up pass over %d namespaces done in %.1f s", len(scopes), time.monotonic() - started)

            def on_pod(pod: Mapping[str, Any]) -> None:
                if operator.options.acts_in((pod.get("metadata") or {}).get("namespace")):
                    operator.handle_pod(pod)

            watch = PodWatch(operator.api, scopes, LABEL_BACKEND, on_pod=on_pod, on_deleted=operator.forget_pod,
                             on_listed=listed, stop=kopf_stop, describe_error=_why)
            for thread in watch.start():
                self._threads.append(thread)

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
                started, cpu = time.monotonic(), time.process_time()
                try:
                    counts = self.operator.sweep()
                except ApiException as exc:
                    log.warning("sweep failed: %s", _why(exc))
                except Exception as exc:
                    log.warning("sweep failed: %s", exc)
                else:
                    log.debug("resync: %s in %.2f s (process CPU %.2f s)", counts, time.monotonic() - started, time.process_time() - cpu)

        for target, name in ((run_pods, "pods"), (run_kopf, "kopf"), (run_sweeps, "sweep")):
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
