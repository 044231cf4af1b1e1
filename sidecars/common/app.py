"""The HTTP process: MCP on ``/mcp`` (stateless, JSON responses), ``/health``, ``/metrics``, served by uvicorn."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
from typing import Callable

from mcp.server import MCPServer
from mcp.server.request_state import InvalidRequestState, RequestStateSecurity
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import __version__, audit
from .backend import Backend, Health
from .config import ConfigError, ServerSettings
from .fastpath import FastToolCalls
from .httpguard import guarded_protocol
from .metrics import Metrics
from .security import AccessControl, TokenSource
from .tools import ToolRegistry
from .wire import JsonRpcGate, tools_only


#: Connection bounds (httpguard), sized for the 128 Mi limit: an open connection costs ~10 KiB (64:
#: +0.6 MiB measured), so 256 cost ~2.5 MiB; any number of slow clients is cut after 10 s. 256 rather
#: than fewer: 100 honest concurrent clients (bench/sidecars) and the kubelet's probes must still get
#: a slot while some clients are slow.
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 256
MAX_BODY_BYTES = 1024 * 1024
#: Request body bytes held by requests in flight, all connections together (a body is held until its
#: request is answered; its parsed forms cost ~4x its size): 4 full 1 MiB bodies at once, while small
#: calls (a few KiB) never meet it. Over it: 503. Measured: 192 concurrent 1 MiB calls peak at ~25
#: MiB over the idle RSS (~75 MiB then, 64 MiB since lean_imports.py) (tests/security/test_slowloris.py).
MAX_INFLIGHT_BODY_BYTES = 4 * 1024 * 1024


class Sidecar:
    """Everything one sidecar process holds: settings, backend, MCP server, registry, health, metrics."""

    def __init__(self, name: str, settings: ServerSettings, backend: Backend, instructions: str):
        self.settings = settings
        self.backend = backend
        self.metrics = Metrics(backend.name)
        self.health = Health(backend, self.metrics, timeout=min(settings.backend_timeout, 3.0))
        # Tools only: no subscriptions/listen (the tool list never changes), no prompt/resource handlers.
        self.server = MCPServer(name, instructions=instructions, version=__version__, log_level=settings.log_level,
                                subscriptions=False,
                                request_state_security=RequestStateSecurity(codec=NoRequestState()))
        tools_only(self.server)
        self.registry = ToolRegistry(
            self.server, backend=backend, health=self.health, metrics=self.metrics, read_only=settings.read_only
        )
        self.auth = TokenSource(mode=settings.auth_mode, token=settings.auth_token, token_file=settings.auth_token_file,
                                on_change=_audit_auth_change)
        self._add_routes()

    def _add_routes(self) -> None:
        @self.server.custom_route("/health", methods=["GET"])
        async def health(request: Request) -> Response:
            body, status = await self.health.check()
            # The auth state, never the token: "not_configured" explains refused MCP calls.
            body["auth"] = self.auth.state()
            if body["auth"] == "not_configured":
                body["auth_error"] = self.auth.problem
            return JSONResponse(body, status_code=status)

        @self.server.custom_route("/livez", methods=["GET"])
        async def livez(request: Request) -> Response:
            # The kubelet's liveness/readiness probe: answers when this process serves HTTP, without
            # touching the datastore (a datastore outage must not restart the sidecar; /health
            # reports it). A hung process stops answering, which a tcpSocket probe cannot see: the
            # kernel completes TCP handshakes for a stopped process.
            return Response("ok\n", media_type="text/plain")

        @self.server.custom_route("/metrics", methods=["GET"])
        async def metrics(request: Request) -> Response:
            payload, content_type = self.metrics.render()
            return Response(payload, media_type=content_type)

    def asgi_app(self):
        """The Starlette app wrapped in the Origin/token check."""
        app = self.server.streamable_http_app(
            stateless_http=True, json_response=True, host=self.settings.host,
            max_request_body_size=1024 * 1024,
            # The SDK's own check depends on the bind address (on for 127.0.0.1, off for 0.0.0.0);
            # AccessControl applies one policy whatever the address, so switch the SDK's off.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        app = NoStandaloneStream(app)
        if self.settings.fast_path:
            app = FastToolCalls(app, self.server)
        app = JsonRpcGate(app)  # malformed JSON-RPC: 400 + one short error, before either path
        app = CompleteBody(app, MAX_BODY_BYTES)
        return AccessControl(app, auth=self.auth, allowed_origins=self.settings.allowed_origins)

    async def serve(self) -> None:
        from uvicorn.config import Config
        from uvicorn.server import Server

        config = Config(
            self.asgi_app(), host=self.settings.host, port=self.settings.port, access_log=False,
            log_level="warning", lifespan="on", timeout_graceful_shutdown=3, server_header=False,
            http=guarded_protocol(request_timeout=REQUEST_TIMEOUT_SECONDS, max_connections=MAX_CONNECTIONS),
        )
        server = Server(config)
        audit.event("startup", backend=self.backend.name, port=self.settings.port, read_only=self.settings.read_only,
                    tools=len(self.registry.names), auth=self.auth.state(),
                    auth_source=("file" if self.settings.auth_token_file else "env") if self.auth.enabled else None)
        asyncio.get_running_loop().call_later(1.0, _release_memory)
        try:
            await server.serve()
        finally:
            await self.backend.close()


class NoRequestState:
    """The request-state codec of a server that never asks the client for input mid-call (no tool
    does): it issues no request state and refuses every token (the SDK answers such a request with
    its invalid-state error). Instead of the SDK's default AES-GCM codec, which would load
    ``cryptography`` (~6 MiB) for nothing (lean_imports.py)."""

    def seal(self, payload: bytes) -> str:
        raise RuntimeError("this server issues no request state")

    def unseal(self, token: str) -> bytes:
        raise InvalidRequestState("this server issues no request state")


class CompleteBody:
    """Reads a POST body whole before the MCP app runs. A client that disconnects mid-body (or is cut
    by the request deadline) is dropped here silently: the SDK would log a ``ClientDisconnect``
    traceback for each one. A body over ``limit`` gets 413 without being buffered, and a body that
    would take the bytes held by all requests in flight over ``budget`` gets 503."""

    def __init__(self, app, limit: int, budget: int = MAX_INFLIGHT_BODY_BYTES):
        self.app = app
        self.limit = limit
        self.budget = budget
        self.held = 0

    async def _refuse(self, send, status: int) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", b"0"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b""})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if size + len(chunk) > self.limit:
                    await self._refuse(send, 413)
                    return
                if self.held + len(chunk) > self.budget:
                    await self._refuse(send, 503)
                    return
                size += len(chunk)
                self.held += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
            del chunks

            async def replay() -> dict:
                return pending.pop() if pending else await receive()

            await self.app(scope, replay, send)
        finally:
            self.held -= size


class NoStandaloneStream:
    """``GET /mcp`` → 405. In stateless mode the SDK would answer with an event stream that never
    sends anything and never ends: every such request (a misdirected probe, a scanner) would pin a
    connection forever. The spec lets a server without server-initiated messages refuse it."""

    def __init__(self, app, path: str = "/mcp"):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == self.path:
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", b"POST"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def _audit_auth_change(state: str, problem: str | None) -> None:
    """One audit line when a token appears or disappears (not one per refused call)."""
    audit.event("auth_state", auth=state, **({"problem": problem[:300]} if problem else {}))


def _release_memory() -> None:
    """Hand the import-time garbage back to the OS: idle RSS is what the pod request is sized for."""
    gc.collect()
    gc.freeze()  # long-lived import objects: keep them out of later collections
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run(build: Callable[[], Sidecar]) -> None:
    """Entry point body: build from env (exit 2 with one line on bad config), then serve until SIGTERM."""
    try:
        sidecar = build()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    audit.configure(sidecar.settings.log_level)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    asyncio.run(sidecar.serve())
