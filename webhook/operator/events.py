"""The operator's Events: posted by a small pool of threads, and remembered by the cluster itself.

Issue 12: a start-up pass over 10,000 missed pods posted 20,000 Events one by one, inside the pod
handlers, and did it again on every restart or change of leader, because which pods were already
announced lived only in memory. Now:

- ``EventPoster`` posts from a queue with a few threads, so judging pods never waits for the API
  server to store Events (it takes them at its own pace: ~150/s on a loaded 2-core machine); the
  queue holds only the few strings of each Event (~0.5 KiB), and blocks beyond ``max_queued``;
- ``announced`` rebuilds "already announced" from the Events we posted before, still in the cluster:
  one paginated list with ``fieldSelector=source=mcp-sidecar-operator`` at start. Once the API
  server has expired an Event (``--event-ttl``, 1 h by default) the condition is announced again.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from kubernetes.client.rest import ApiException

from webhook.shared.kube import list_pages, request_raw

log = logging.getLogger("webhook.operator")

COMPONENT = "mcp-sidecar-operator"
MISSED_REASON, STALE_REASON = "MCPSidecarMissed", "MCPSidecarStale"
#: pod condition -> Event reason, and back
CONDITION_REASONS = {"missed": MISSED_REASON, "stale": STALE_REASON}
REASON_CONDITIONS = {reason: condition for condition, reason in CONDITION_REASONS.items()}
#: Events posted once per object (the operator's ``once_key`` suffix for each)
ONCE_REASONS = {"MCPLabelConflict": "conflict", "MCPServiceExists": "svc"}


def event_body(kind: str, meta: Mapping[str, Any], type_: str, reason: str, message: str, *, instance: str | None = None) -> dict[str, Any]:
    """A core/v1 Event about ``kind`` ``meta`` (pure but for the clock)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = meta.get("namespace")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
        "involvedObject": {"apiVersion": "v1" if kind == "Pod" else "apps/v1", "kind": kind, "name": meta.get("name"),
                           "namespace": namespace, "uid": meta.get("uid")},
        "reason": reason, "message": message[:1024], "type": type_,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT, "reportingInstance": instance or socket.gethostname(),
    }


@dataclass
class Announced:
    """What our Events in the cluster already say."""

    #: pod uid -> condition ("missed" or "stale") of its latest Missed/Stale Event
    pods: dict[str, str] = field(default_factory=dict)
    #: (owner uid, condition) pairs announced on a pod's controller
    owners: set[tuple[str, str]] = field(default_factory=set)
    #: once-keys (``uid:conflict``, ``uid:svc``) -> reason
    once: dict[str, str] = field(default_factory=dict)
    events: int = 0


def announced(api: Any, namespaces: Iterable[str] = ()) -> Announced:
    """Read back the Events this operator posted (cluster-wide, or in each of ``namespaces``)."""
    found = Announced()
    latest: dict[str, str] = {}  # pod uid -> timestamp of the Event kept in found.pods
    paths = [f"/api/v1/namespaces/{ns}/events" for ns in namespaces] or ["/api/v1/events"]
    for path in paths:
        for items, _ in list_pages(api, path, field_selector=f"source={COMPONENT}"):
            for event in items:
                found.events += 1
                involved = event.get("involvedObject") or {}
                uid, reason = str(involved.get("uid") or ""), event.get("reason")
                if not uid:
                    continue
                when = str(event.get("lastTimestamp") or (event.get("metadata") or {}).get("creationTimestamp") or "")
                condition = REASON_CONDITIONS.get(reason or "")
                if condition and involved.get("kind") == "Pod":
                    if when >= latest.get(uid, ""):
                        latest[uid], found.pods[uid] = when, condition
                elif condition:
                    found.owners.add((uid, condition))
                elif reason in ONCE_REASONS:
                    found.once[f"{uid}:{ONCE_REASONS[reason]}"] = reason
    return found


class EventPoster:
    """Posts Events from a bounded queue with ``workers`` threads (plain JSON, no typed models)."""

    def __init__(self, api: Any, *, workers: int = 4, max_queued: int = 50_000,
                 post: Callable[[str, dict[str, Any]], None] | None = None, why: Callable[[ApiException], str] = str):
        self._post = post or (lambda namespace, body: request_raw(api, "POST", f"/api/v1/namespaces/{namespace}/events", body=body, timeout=30).read())
        self._why = why
        self._queue: queue.Queue[tuple[str, ...] | None] = queue.Queue(max_queued)
        self._threads = [threading.Thread(target=self._work, name=f"events-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, kind: str, meta: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an Event about ``kind`` ``meta`` (only its name, namespace and uid are kept)."""
        self._queue.put((kind, str(meta.get("name", "")), str(meta.get("namespace", "")), str(meta.get("uid", "")),
                         type_, reason, message[:1024]))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                kind, name, namespace, uid, type_, reason, message = item
                body = event_body(kind, {"name": name, "namespace": namespace, "uid": uid}, type_, reason, message)
                try:
                    self._post(namespace, body)
                except ApiException as exc:
                    log.log(logging.WARNING if exc.status == 403 else logging.DEBUG, "could not post event %s: %s", body.get("reason"), self._why(exc))
                except Exception as exc:  # API unreachable: an Event is not worth a retry loop
                    log.debug("could not post event %s: %s", body.get("reason"), exc)
            finally:
                self._queue.task_done()

    def wait_idle(self) -> None:
        """Until every queued Event was posted (or failed)."""
        self._queue.join()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
