"""Bearer-token and Origin checks in front of ``/mcp``.

Bound to 0.0.0.0 (as it must be in a pod) the SDK checks neither Host nor Origin, and its custom
routes skip auth, so both checks live here as one small ASGI middleware. ``/livez``, ``/health``
and ``/metrics`` stay open: kubelet probes and Prometheus scrapes carry no token.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]

OPEN_PATHS = frozenset({"/livez", "/health", "/metrics"})
# Pages served from the pod's own loopback (a port-forwarded Inspector, a local IDE) are trusted;
# a DNS-rebinding page always has the attacker's own host name as its Origin.
LOOPBACK_ORIGIN_HOSTS = ("localhost", "127.0.0.1", "::1")


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """True for loopback origins and the configured ones (``https://app.example`` or ``https://app.example:*``)."""
    origin = origin.strip().rstrip("/").lower()
    try:
        parts = urlsplit(origin)
        port = parts.port  # raises on a malformed port such as "9000.evil.example"
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.username:
        return False
    if parts.hostname in LOOPBACK_ORIGIN_HOSTS:
        return True
    base = f"{parts.scheme}://{parts.hostname}" if parts.hostname.count(":") == 0 else f"{parts.scheme}://[{parts.hostname}]"
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern in ("*", origin):
            return True
        if pattern.endswith(":*") and pattern[:-2] == base:
            return True
        if port is None and pattern == base:
            return True
    return False


class AccessControl:
    """ASGI middleware: foreign ``Origin`` → 403, missing or wrong bearer token → 401."""

    def __init__(self, app: ASGIApp, *, auth_token: str | None, allowed_origins: tuple[str, ...]):
        self.app = app
        self._token = auth_token.encode() if auth_token else None
        self._allowed = allowed_origins

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # ASGI lowercases names; duplicates: last one wins
        origin = headers.get(b"origin")
        if origin is not None and not origin_allowed(origin.decode("latin-1"), self._allowed):
            await _reply(send, 403, {"error": "forbidden", "message": "Origin not allowed"})
            return
        if self._token is not None:
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._token):
                await _reply(
                    send, 401, {"error": "unauthorized", "message": "Bearer token required"},
                    extra=[(b"www-authenticate", b'Bearer realm="mcp"')],
                )
                return
        await self.app(scope, receive, send)


async def _reply(send: Any, status: int, body: dict[str, str], extra: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": payload})
