"""Cluster access for the operator and the CLI: kubeconfig or in-cluster, with clear errors."""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping
from urllib.parse import quote

import orjson
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException


class KubeAccessError(RuntimeError):
    """No usable cluster (no kubeconfig, unreachable) or no permission; the message says which."""


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (ConfigException, FileNotFoundError, TypeError) as exc:
        raise KubeAccessError(f"no cluster configured: {exc} (set KUBECONFIG or --kubeconfig, or run in a pod)") from None
    # The operator calls from ~15 threads (pod watch, resync, Event posters, companion Services,
    # kopf's executor): the default pool of cpu_count * 5 connections dropped and re-opened TLS connections.
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, 20)
    return client.ApiClient(configuration)


def explain(exc: Exception, what: str) -> KubeAccessError:
    """Turn an API/transport error into one line a cluster operator can act on."""
    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return KubeAccessError(f"permission denied to {what} ({exc.status} {exc.reason}); check your RBAC")
        return KubeAccessError(f"cannot {what}: {exc.status} {exc.reason}")
    return KubeAccessError(f"cannot {what}: cluster unreachable ({type(exc).__name__}: {exc})")


# ---- plain JSON: no typed models ----------------------------------------------------------------
# Issue 12 measured the typed client's pod lists as the operator's and the audit's main cost:
# 23.5 MiB of JSON became 253 MiB of models plus 69 MiB of dicts (sanitize_for_serialization).
# These helpers go through the same ApiClient (its auth, TLS and connection pool) and orjson
# (already a dependency; ~25 % faster than json on a page of pods).


def request_raw(api: client.ApiClient, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                body: Any = None, timeout: float | tuple[float, float] | None = None) -> Any:
    """One call through ``api``; the unread response (its ``.response`` streams). Raises ApiException >= 400."""
    params = [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in (query or {}).items() if v is not None and v != ""]
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    method, url, headers, body, _ = api.param_serialize(method, path, query_params=params, header_params=headers, body=body,
                                                         auth_settings=["BearerToken"])
    resp = api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
    if resp.status >= 400:
        data = resp.read()
        raise ApiException(status=resp.status, reason=resp.reason, body=data[:2000].decode(errors="replace"))
    return resp


def request_json(api: client.ApiClient, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                 body: Any = None, timeout: float | tuple[float, float] | None = 30) -> Any:
    """``request_raw`` decoded as JSON."""
    data = request_raw(api, method, path, query=query, body=body, timeout=timeout).read()
    return orjson.loads(data) if data else None


def list_pages(api: client.ApiClient, path: str, *, label_selector: str | None = None, field_selector: str | None = None,
               limit: int = 500, timeout: float = 60) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """A paginated list (``limit``/``continue``): yields (items of one page, the list's resourceVersion).

    Only one page is held at a time, so a list of 50,000 pods costs the memory of ``limit`` pods.
    """
    token = ""
    while True:
        page = request_json(api, "GET", path, query={"labelSelector": label_selector, "fieldSelector": field_selector,
                                                     "limit": limit, "continue": token}, timeout=timeout)
        meta = page.get("metadata") or {}
        yield page.get("items") or [], str(meta.get("resourceVersion", ""))
        token = meta.get("continue") or ""
        if not token:
            return


def watch_lines(api: client.ApiClient, path: str, *, resource_version: str, label_selector: str | None = None,
                timeout_seconds: int = 300) -> Iterator[dict[str, Any]]:
    """A watch from ``resource_version`` with bookmarks: yields the decoded watch events until the server closes it.

    ``ERROR`` events are yielded as they come (410 Gone: the caller lists again).
    """
    resp = request_raw(api, "GET", path, query={"watch": True, "labelSelector": label_selector, "resourceVersion": resource_version,
                                                "allowWatchBookmarks": True, "timeoutSeconds": timeout_seconds},
                       timeout=(10, timeout_seconds + 30))
    stream = resp.response
    try:
        buffer = b""
        for chunk in stream.stream(65536, decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield orjson.loads(line)
        if buffer.strip():
            yield orjson.loads(buffer)
    finally:
        stream.close()  # a watch left early must not go back to the pool half-read
        stream.release_conn()


def pods_path(namespace: str | None = None) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods" if namespace else "/api/v1/pods"
