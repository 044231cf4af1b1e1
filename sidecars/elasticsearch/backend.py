"""The ``AsyncElasticsearch`` client, its timeouts, and how its errors read to an MCP client."""

from __future__ import annotations

import os
import ssl

from elastic_transport import ConnectionError as TransportConnectionError, ConnectionTimeout
from elasticsearch import (
    ApiError,
    AsyncElasticsearch,
    AuthenticationException,
    AuthorizationException,
    UnsupportedProductError,
)

from sidecars.common.config import ConfigError
from sidecars.common.tls import announce, client_context, describe_tls_failure

from .config import ElasticsearchSettings
from .engines import ENGINE_ENV, Engine
from .transport import ResponseTooLarge, bounded_node, opensearch_node


def es_tls_context(settings: ElasticsearchSettings) -> ssl.SSLContext:
    """The client context (sidecars/common/tls.py), with the startup line; an unusable CA file exits 2."""
    try:
        context = client_context(settings.tls_settings)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"ES_CA_CERT: cannot load the PEM file: {str(exc)[:200]}") from None
    announce("elasticsearch", settings.tls_settings, verify_setting="ES_VERIFY_CERTS",
             server_name_setting="ES_TLS_SERVER_NAME", ca_setting="ES_CA_CERT")
    return context


class ElasticsearchBackend:
    name = "elasticsearch"

    def __init__(self, settings: ElasticsearchSettings, timeout: float, max_result_bytes: int = 1024 * 1024):
        self.settings = settings
        self.engine: Engine = settings.engine
        self.name = self.engine.name
        auth: dict = {}
        if settings.api_key:  # Authorization: ApiKey <encoded>; config refuses it together with a user
            auth["api_key"] = settings.api_key
        elif settings.username:
            auth["basic_auth"] = (settings.username, settings.password)
        # What one answer may be: twice the result budget on the wire (raw answers carry metadata and
        # whole documents that are cut afterwards) and 16x as Python objects. With the 1 MiB default,
        # 2 MiB and 16 MiB: an idle sidecar is ~76 MiB of a 128Mi limit.
        self.read_cap = 2 * max_result_bytes
        self.parse_cap = 16 * max_result_bytes
        tls: dict = {}
        if settings.scheme == "https":
            tls["ssl_context"] = es_tls_context(settings)
            if not settings.verify_certs:
                tls["ssl_show_warn"] = False  # announce() said it once at start, not once per node
        # The client opens an OpenTelemetry span per request; with no OTel SDK in the image every span is
        # a non-recording one, built and entered for nothing on each call. Off unless set explicitly.
        os.environ.setdefault("OTEL_PYTHON_INSTRUMENTATION_ELASTICSEARCH_ENABLED", "false")
        self.client = AsyncElasticsearch(
            settings.url,
            request_timeout=timeout,
            max_retries=1,  # one retry on a dead pooled connection; a down node still fails fast
            retry_on_timeout=False,
            connections_per_node=32,
            node_class=self._node_class(),
            **auth,
            **tls,
        )

    def _node_class(self):
        node = bounded_node(self.read_cap, self.parse_cap)
        return opensearch_node(node) if self.engine.plain_wire else node

    async def ping(self) -> None:
        # HEAD / lives in an optional module on some builds; cluster health is always there.
        await self.client.cluster.health(timeout="2s")

    def describe_error(self, exc: BaseException) -> tuple[str, str | None]:
        where = f"{self.engine.title} at {self.settings.url}"
        if isinstance(exc, ResponseTooLarge):
            return str(exc), None
        if isinstance(exc, ConnectionTimeout):
            return f"{where} did not answer in time", "timeout"
        if isinstance(exc, TransportConnectionError):
            if self.settings.scheme == "https":
                tls = describe_tls_failure(exc, where, ca_setting="ES_CA_CERT",
                                           server_name_setting="ES_TLS_SERVER_NAME")
                if tls:
                    return tls, "tls"
            elif "server disconnected" in str(exc).lower() or "bad request" in str(exc).lower():
                return (f"{where} is unreachable: {_first_line(exc)} (if Elasticsearch serves HTTPS, set "
                        "ES_SCHEME=https and ES_CA_CERT)"), "connection"
            return f"{where} is unreachable: {_first_line(exc)}", "connection"
        if isinstance(exc, UnsupportedProductError):
            return (f"The server at {self.settings.url} is not Elasticsearch: {_first_line(exc)} (an OpenSearch "
                    f"node? set {ENGINE_ENV}=opensearch, or label the pod mcp-sidecar.dox/backend: opensearch)"), "product"
        if isinstance(exc, AuthenticationException):
            if not (self.settings.username or self.settings.api_key):
                return (f"{where} requires authentication (401) and this sidecar has no credentials: set "
                        "ES_USERNAME/ES_PASSWORD or ES_API_KEY"), "auth"
            return f"{where} rejected the credentials (check ES_USERNAME/ES_PASSWORD or ES_API_KEY)", "auth"
        if isinstance(exc, AuthorizationException):
            return f"{where} refused the request: {reason(exc)}", None
        if isinstance(exc, ApiError):
            return f"{self.engine.title} error {exc.meta.status}: {reason(exc)}", None
        return f"{type(exc).__name__}: {_first_line(exc)}", None

    async def close(self) -> None:
        await self.client.close()


def reason(exc: ApiError) -> str:
    """The most useful line of an Elasticsearch error body (root cause reason, else the type)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    if isinstance(error, dict):
        causes = error.get("root_cause") or []
        first = causes[0] if causes and isinstance(causes[0], dict) else error
        text = first.get("reason") or error.get("reason") or error.get("type") or ""
        kind = first.get("type") or error.get("type")
        return f"{kind}: {text}" if kind and kind not in text else str(text)
    if isinstance(error, str):
        return error
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
