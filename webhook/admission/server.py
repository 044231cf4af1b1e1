"""The HTTPS admission server: FastAPI on uvicorn.

Routes: ``POST /mutate`` (AdmissionReview), ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.
All decisions live in ``webhook.admission.review``/``webhook.engine.injection``; this module only does HTTP,
limits, metrics, logging and the lifecycle (config and certificate reloads, graceful drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from typing import AsyncIterator, Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from webhook.admission.httpguard import guarded_protocol
from webhook.admission.review import MAX_REVIEW_BYTES, BadReview, encode, review
from webhook.admission.tls import CertReloader
from webhook.shared.config_store import ConfigStore
from webhook.shared.metrics import Metrics

#: The operations an AdmissionReview can carry (admission.k8s.io/v1); anything else counts as "other".
ADMISSION_OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
log = logging.getLogger("webhook.server")

# Connection bounds (webhook.admission.httpguard), sized for the chart's 256 Mi limit. The API server sends a
# review in one go and gives up after the webhook's timeoutSeconds (10 s by default, 30 at most), so
# a request not received within 10 s is only holding memory. 256 connections cost ~10 MiB; the API
# servers of a large cluster keep a few dozen open. Both bounds hold per process: with `--workers N`
# the pod accepts up to N x MAX_CONNECTIONS connections and N x MAX_INFLIGHT_BODY_BYTES of bodies.
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 256
#: Request bodies being read at once, all connections together. Reviews are a few KiB; 256
#: connections each trickling a 6 MiB body would otherwise hold 1.6 GB. Over it: 503.
MAX_INFLIGHT_BODY_BYTES = 32 * 1024 * 1024
#: Longest line of request-derived text written to the log.
MAX_LOG_CHARS = 512


class BodyTooLarge(Exception):
    pass


class Busy(Exception):
    pass


class BodyBudget:
    """Bytes of request bodies held by all in-flight reads together."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0


async def _read_limited(request: Request, limit: int, budget: BodyBudget | None = None) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            if budget is not None:
                if budget.used + len(chunk) > budget.limit:
                    raise Busy
                budget.used += len(chunk)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        if budget is not None:
            budget.used -= sum(len(c) for c in chunks)


def _clip(text: str, limit: int = MAX_LOG_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    store: ConfigStore,
    metrics: Metrics | None = None,
    *,
    config_poll_seconds: float = 2.0,
    cert_poll_seconds: float = 5.0,
    max_body_bytes: int = MAX_REVIEW_BYTES,
    native_supported: bool | None = None,
    metrics_dir: str | None = None,
    worker_header: bool = False,
) -> FastAPI:
    """``metrics_dir``: the multiprocess metrics directory of ``serve --workers N`` (``/metrics`` then
    sums every worker's files); ``worker_header``: answer reviews with the worker's PID in
    ``X-MCP-Injector-Worker`` (with several workers, to see how connections spread)."""
    metrics = metrics or Metrics()
    metrics.set_config_digest(store.current.digest)
    state = {"ready": False}
    budget = BodyBudget(MAX_INFLIGHT_BODY_BYTES)
    worker_headers = {"x-mcp-injector-worker": str(os.getpid())} if worker_header else None
    scrape_registry = metrics.registry
    if metrics_dir is not None:
        scrape_registry = CollectorRegistry()
        MultiProcessCollector(scrape_registry, path=metrics_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(store.watch(config_poll_seconds))]
        cert_reloader: CertReloader | None = getattr(app.state, "cert_reloader", None)
        if cert_reloader is not None:
            tasks.append(asyncio.create_task(cert_reloader.watch(cert_poll_seconds)))
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            for task in tasks:
                task.cancel()

    app = FastAPI(title="mcp-sidecar-injector", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.metrics = metrics
    app.state.store = store

    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        try:
            raw = await _read_limited(request, max_body_bytes, budget)
        except BodyTooLarge:
            metrics.errors.labels(type="too-large").inc()
            return _error(413, f"AdmissionReview larger than {max_body_bytes} bytes")
        except Busy:
            metrics.errors.labels(type="busy").inc()
            return _error(503, "too many request bytes in flight; retry")
        except ClientDisconnect:
            # The client left mid-body (or the request deadline closed it): nobody to answer.
            metrics.errors.labels(type="disconnected").inc()
            return Response(status_code=400)
        try:
            outcome = review(raw, store.current, native_supported=native_supported)
        except BadReview as exc:
            metrics.errors.labels(type="bad-request").inc()
            message = _clip(str(exc))
            log.warning("rejected malformed AdmissionReview: %s", message)
            return _error(400, message)
        except Exception:  # a bug must not become a 500 storm without a trace
            metrics.errors.labels(type="internal").inc()
            log.exception("internal error while reviewing a request")
            return _error(500, "internal error; see the injector log")
        # Label values from closed sets only: a request field as a label would let any caller grow
        # /metrics (and this process) without bound.
        operation = outcome.operation if outcome.operation in ADMISSION_OPERATIONS else "other"
        metrics.reviews.labels(operation=operation, result=outcome.result).inc()
        if outcome.error is not None:
            metrics.errors.labels(type="internal").inc()
            # Frames only: the exception's message may quote the request, so it is clipped.
            log.error("internal error while reviewing pod %s/%s, admitted unchanged: %s: %s\n%s",
                      _clip(outcome.namespace, 64), _clip(outcome.name, 64), type(outcome.error).__name__,
                      _clip(str(outcome.error), 200), "".join(traceback.format_tb(outcome.error.__traceback__)))
        injection = outcome.injection
        if injection is not None:
            if injection.injected:
                metrics.injections.labels(backend=injection.backend or "").inc()
            elif injection.skip_reason is not None:
                metrics.skips.labels(reason=injection.skip_reason.value).inc()
            if injection.warnings or not injection.injected and injection.skip_reason and injection.skip_reason.warns:
                log.warning("pod %s/%s: %s", _clip(outcome.namespace, 64), _clip(outcome.name, 64),
                            _clip("; ".join(injection.warnings) or injection.message))
        body = encode(outcome.body)
        metrics.latency.observe(time.perf_counter() - started)
        return Response(body, media_type="application/json", headers=worker_headers)

    # A plain Starlette route: the handler takes the raw request, so FastAPI's per-request
    # dependency/validation machinery would only add ~15% CPU per review (bench/webhook).
    app.router.routes.append(Route("/mutate", mutate, methods=["POST"]))

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if not state["ready"]:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "config": store.current.digest, "configError": store.last_error})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(scrape_registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(
    *,
    host: str,
    port: int,
    cert_file: str | None,
    key_file: str | None,
    config_path: str | None,
    log_level: str = "info",
    drain_seconds: int = 20,
    watch_seconds: float = 2.0,
    workers: int = 1,
    beside: "Callable[[ConfigStore, Metrics], Callable[[], None] | None] | None" = None,
) -> int:
    """Run the admission server until SIGTERM/SIGINT; in-flight reviews are answered before exit.

    Returns the exit status: 0 after a drained shutdown. ``workers`` > 1 runs that many server
    processes on the port (``webhook.admission.workers``), each one built as below.

    ``beside`` starts something in the same process that shares the configuration and the metrics
    (the CLI passes the operator for `serve` without `--no-operator`) and returns its stop function,
    or None when it did not start; the admission package itself never imports the operator.
    """
    options = dict(host=host, port=port, cert_file=cert_file, key_file=key_file, config_path=config_path,
                   log_level=log_level, drain_seconds=drain_seconds, watch_seconds=watch_seconds)
    if workers > 1:
        if beside is not None:
            raise ValueError("several workers serve admission only: run the operator as its own process")
        from webhook.admission.workers import serve_workers

        # Built once here and thrown away: a bad configuration or certificate stops the start with
        # the same error as with one worker, before any process is forked.
        _build_server(**options)

        def run_worker(sock, metrics_dir: str) -> int:
            server, _store, _metrics = _build_server(**options, metrics_dir=metrics_dir, worker_header=True)
            _run_draining(server, [sock])
            return 0

        return serve_workers(workers, run_worker, host=host, port=port, drain_seconds=drain_seconds)
    server, store, metrics = _build_server(**options)
    stop_beside = beside(store, metrics) if beside is not None else None
    try:
        _run_draining(server, None)
    finally:
        if stop_beside is not None:
            stop_beside()
    return 0


def _build_server(
    *,
    host: str,
    port: int,
    cert_file: str | None,
    key_file: str | None,
    config_path: str | None,
    log_level: str,
    drain_seconds: int,
    watch_seconds: float,
    metrics_dir: str | None = None,
    worker_header: bool = False,
) -> tuple[uvicorn.Server, ConfigStore, Metrics]:
    """One server process's parts: its config store, metrics, app and TLS context with its reloader."""
    metrics = Metrics()
    store = ConfigStore(config_path, on_reload=lambda result, cfg: _record_reload(metrics, result, cfg))
    app = create_app(store, metrics, config_poll_seconds=watch_seconds, cert_poll_seconds=watch_seconds,
                     metrics_dir=metrics_dir, worker_header=worker_header)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=cert_file,
        ssl_keyfile=key_file,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=drain_seconds,
        lifespan="on",
        http=guarded_protocol(request_timeout=REQUEST_TIMEOUT_SECONDS, max_connections=MAX_CONNECTIONS),
        loop="webhook.admission.httpguard:handshake_bounded_loop",
    )
    config.load()  # builds the SSLContext now, so the reloader can update the live one
    if config.ssl is not None and cert_file and key_file:
        app.state.cert_reloader = CertReloader(
            config.ssl, cert_file, key_file, on_reload=lambda r: metrics.tls_reloads.labels(result=r).inc()
        )
    return uvicorn.Server(config), store, metrics


def _run_draining(server: uvicorn.Server, sockets: list | None) -> None:
    """Serve until SIGTERM/SIGINT, drain, and return (a drained shutdown is a success)."""
    # uvicorn drains, restores the previous handler and re-raises the signal it caught: make that
    # previous handler a clean exit so a drained shutdown ends with status 0, not "killed by SIGTERM".
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run(sockets=sockets)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def _record_reload(metrics: Metrics, result: str, cfg) -> None:
    metrics.config_reloads.labels(result=result).inc()
    if cfg is not None:
        metrics.set_config_digest(cfg.digest)
