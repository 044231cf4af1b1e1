"""The labelled pods, listed and watched with a server-side ``labelSelector`` (a small informer).

kopf filters ``labels=`` on the client: through kopf the operator received, parsed and remembered
every pod of the cluster, labelled or not (issue 12: 620 MiB at 10,000 pods, OOM-killed at ~3,000
under the chart's 256 Mi). Here the API server sends only pods carrying ``mcp-sidecar.dox/backend``:
a paginated list (one page in memory at a time), then a watch from the list's resourceVersion with
bookmarks; a 410 Gone lists again. No pod is kept: each one is handed to ``on_pod`` and dropped.
Each scope (all namespaces, or each namespace of a confined operator) has its own thread, so pod
handling never runs in kopf's executor where the workload handlers wait.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from kubernetes.client.rest import ApiException

from webhook.shared.kube import list_pages, pods_path, watch_lines

log = logging.getLogger("webhook.operator")

Pod = Mapping[str, Any]


class PodWatch:
    """List then watch the pods matching ``selector`` in each scope (None: all namespaces).

    ``on_pod`` gets every listed, added or modified pod, ``on_deleted`` every deleted one; ``on_listed(scope, count, seconds)`` follows
    each complete list (the start-up pass, and a re-list after 410 Gone).
    """

    def __init__(self, api: Any, scopes: Sequence[str | None], selector: str, *, on_pod: Callable[[Pod], None],
                 on_deleted: Callable[[Pod], None] | None = None, on_listed: Callable[[str | None, int, float], None] | None = None,
                 stop: threading.Event,
                 describe_error: Callable[[ApiException], str] = str, page_size: int = 500, watch_seconds: int = 60):
        self.api = api
        self.scopes = list(scopes)
        self.selector = selector
        self.on_pod = on_pod
        self.on_deleted = on_deleted or (lambda pod: None)
        self.on_listed = on_listed or (lambda scope, count, seconds: None)
        self.stop = stop
        self.describe_error = describe_error
        self.page_size = page_size
        #: the server ends each watch after this long (a stopped watch is noticed within it)
        self.watch_seconds = watch_seconds

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.run, args=(scope,), name=f"pods-{scope or 'all'}", daemon=True) for scope in self.scopes]
        for thread in threads:
            thread.start()
        return threads

    def run(self, scope: str | None) -> None:
        path, where = pods_path(scope), scope or "all namespaces"
        resource_version: str | None = None
        backoff = 1.0
        while not self.stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list(path, scope)
                    if resource_version is None:
                        return  # stopped while listing
                for event in watch_lines(self.api, path, resource_version=resource_version, label_selector=self.selector,
                                         timeout_seconds=self.watch_seconds):
                    if self.stop.is_set():
                        return
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:  # our resourceVersion is too old: list again
                            resource_version = None
                            break
                        raise ApiException(status=obj.get("code"), reason=obj.get("reason"), body=obj.get("message"))
                    resource_version = (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                    if kind in ("ADDED", "MODIFIED"):
                        self._deliver(obj)
                    elif kind == "DELETED":
                        self.on_deleted(obj)
                backoff = 1.0
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = None
                    continue
                log.warning("pods in %s: %s", where, self.describe_error(exc))
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # connection reset, API server restarting...
                log.warning("pod watch in %s interrupted: %s", where, exc)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _list(self, path: str, scope: str | None) -> str | None:
        started, count, resource_version = time.monotonic(), 0, ""
        for items, resource_version in list_pages(self.api, path, label_selector=self.selector, limit=self.page_size):
            for pod in items:
                if self.stop.is_set():
                    return None
                self._deliver(pod)
                count += 1
        self.on_listed(scope, count, time.monotonic() - started)
        return resource_version

    def _deliver(self, pod: Pod) -> None:
        try:
            self.on_pod(pod)
        except Exception:  # one bad pod never stops the watch
            meta = pod.get("metadata") or {}
            log.exception("handling pod %s/%s failed", meta.get("namespace"), meta.get("name"))
