"""Bearer-token and Origin checks in front of ``/mcp``.

Bound to 0.0.0.0 (as it must be in a pod) the SDK checks neither Host nor Origin, and its custom
routes skip auth, so both checks live here as one small ASGI middleware. ``/livez``, ``/health``
and ``/metrics`` stay open: kubelet probes and Prometheus scrapes carry no token.

Auth is on unless ``MCP_AUTH=none``. With no usable token the sidecar fails closed: every MCP call
gets a 503 that says why, while the probes keep passing (the datastore is unaffected and a restart
would not bring the token). The token file is re-read when it changes, so a rotated Secret reaches a
running sidecar through the kubelet's volume update, without a restart.
"""

from __future__ import annotations

import hmac
import json
import os
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


#: A token file larger than this is refused (a mis-mounted Secret must not be read whole).
MAX_TOKEN_BYTES = 4096
TOKEN_SECRET_HINT = "Secret mcp-sidecar-token (key token)"


class TokenSource:
    """Where the bearer token comes from: nowhere (``MCP_AUTH=none``), an env value, or a file.

    ``current()`` returns the token, or None when auth is on but no usable token exists (the
    fail-closed state; ``problem`` says why). The file is stat()ed on every call (a few
    microseconds) and read again only when its identity or mtime changed: the kubelet swaps a
    Secret volume's files atomically, which gives the path a new inode.
    """

    def __init__(self, *, mode: str = "token", token: str | None = None, token_file: str | None = None,
                 on_change: Callable[[str, str | None], None] | None = None):
        self.mode = mode
        self.token_file = token_file
        self._static = token.strip().encode() if token and token.strip() else None
        self._stamp: tuple[int, int, int, int] | None = None
        self._file_token: bytes | None = None
        self._file_problem: str | None = None
        self._on_change = on_change
        self._last_state: str | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def current(self) -> bytes | None:
        if not self.enabled:
            return None
        if self.token_file:
            self._refresh()
            token = self._file_token
        else:
            token = self._static
        self._report(token)
        return token

    @property
    def problem(self) -> str | None:
        """Why no token is usable, or None."""
        if not self.enabled:
            return None
        if self.token_file:
            return self._file_problem
        if self._static is None:
            return "MCP_AUTH_TOKEN_FILE and MCP_AUTH_TOKEN are both unset or blank"
        return None

    def state(self) -> str:
        """``none`` (auth off), ``token`` (a token is in force) or ``not_configured`` (fail closed)."""
        if not self.enabled:
            return "none"
        return "token" if self.current() is not None else "not_configured"

    def _refresh(self) -> None:
        assert self.token_file is not None
        try:
            st = os.stat(self.token_file)
        except OSError as exc:
            self._stamp, self._file_token = None, None
            self._file_problem = f"token file {self.token_file[:200]} is not readable ({exc.strerror})"
            return
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            with open(self.token_file, "rb") as handle:
                data = handle.read(MAX_TOKEN_BYTES + 1)
        except OSError as exc:
            self._stamp, self._file_token = None, None  # try again on the next call
            self._file_problem = f"token file {self.token_file[:200]} is not readable ({exc.strerror})"
            return
        data = data.strip()
        if len(data) > MAX_TOKEN_BYTES:
            self._file_token, self._file_problem = None, f"token file {self.token_file[:200]} is larger than {MAX_TOKEN_BYTES} bytes"
        elif not data:
            self._file_token, self._file_problem = None, f"token file {self.token_file[:200]} is empty"
        else:
            self._file_token, self._file_problem = data, None

    def _report(self, token: bytes | None) -> None:
        state = "token" if token is not None else "not_configured"
        if state != self._last_state:
            self._last_state = state
            if self._on_change is not None:
                self._on_change(state, self.problem)


def not_configured_message(problem: str | None) -> str:
    return (f"no bearer token is provisioned: {TOKEN_SECRET_HINT} is missing or empty"
            f"{f' ({problem})' if problem else ''}; the operator creates it, or run "
            "`mcp-sidecar rotate-token -n <namespace>`. MCP calls are refused until it exists "
            "(set MCP_AUTH=none, or the pod annotation mcp-sidecar.dox/auth: none, to run without a credential)")


class AccessControl:
    """ASGI middleware: foreign ``Origin`` → 403; auth on and no token → 503; missing or wrong bearer token → 401."""

    def __init__(self, app: ASGIApp, *, auth: TokenSource, allowed_origins: tuple[str, ...]):
        self.app = app
        self._auth = auth
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
        if self._auth.enabled:
            expected = self._auth.current()
            if expected is None:
                # Fail closed: never serve MCP without a credential because the credential is missing.
                await _reply(send, 503, {"error": "auth_not_configured", "message": not_configured_message(self._auth.problem)})
                return
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), expected):
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
