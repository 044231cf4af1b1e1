"""Connection bounds for uvicorn: a request-receipt deadline, a header size cap, a connection cap.

uvicorn has no timeout covering the reception of a request (encode/uvicorn#157 lists
``--timeout-request-start``/``--timeout-request-complete`` as not done): ``timeout_keep_alive`` only
runs between requests and is cancelled by every received byte, and a connection that never sends
anything has no timer at all, so a client trickling bytes (slowloris) holds a connection, and its
memory, forever. ASGI middleware cannot help: the app runs only once the headers are parsed. So
this is a subclass of uvicorn's httptools protocol (the one ``http="auto"`` picks with
``uvicorn[standard]``), built by ``guarded_protocol`` and passed as ``uvicorn.Config(http=...)``:

* a connection must deliver each complete request (headers and body) within ``request_timeout``
  seconds of its first byte (or of the connection opening); otherwise it is closed. The deadline
  is disarmed once the request is in, so slow responses are never cut;
* headers larger than ``max_header_bytes`` get 431 and the connection is closed (httptools itself
  has no limit);
* beyond ``max_connections`` open connections a new one gets an immediate 503 and is closed,
  instead of queueing or costing memory.

Over TLS, a connection reaches the protocol only once its handshake is done; until then asyncio's
default gives it 60 s, and each pending handshake holds ~50 KiB (900 silent TCP connections: +46
MiB on the webhook). ``handshake_bounded_loop`` (``uvicorn.Config(loop=...)``) is uvicorn's usual
loop whose TLS servers give the handshake ``TLS_HANDSHAKE_TIMEOUT_SECONDS`` instead.

The same file is shipped in ``webhook/`` and ``sidecars/common/`` (each image carries only its own
package); tests/security checks that the two copies are identical.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("uvicorn.error")

TLS_HANDSHAKE_TIMEOUT_SECONDS = 5.0

_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\n"
            b"content-length: 20\r\n\r\ntoo many connections")
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")


def guarded_protocol(*, request_timeout: float, max_connections: int, max_header_bytes: int = 64 * 1024) -> type:
    """An ``asyncio.Protocol`` class for ``uvicorn.Config(http=...)`` that enforces the three bounds."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _refused = False
        _deadline: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _in_headers = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.server_state.connections) >= max_connections:
                self._refused = True
                transport.write(_REFUSED)
                transport.close()
                return
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_headers or self.cycle is None or self.cycle.response_complete:
                # Between requests or inside the headers: the deadline runs from the first byte
                # (never re-armed by later bytes) and the bytes count toward the header cap.
                if self._deadline is None:
                    self._arm()
                self._header_bytes += len(data)
            super().data_received(data)
            # Still inside the headers after this chunk: all the bytes counted so far are headers.
            if self._in_headers and self._header_bytes > max_header_bytes:
                self._close(_TOO_LARGE)

        # httptools callbacks: the headers are being read between the first two.
        def on_message_begin(self) -> None:
            self._in_headers = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            self._header_bytes = 0
            super().on_message_complete()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(request_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            # Closing makes uvicorn call connection_lost, which tells an app still waiting for the
            # body that the client is gone.
            self._deadline = None
            self._close(None)

        def _close(self, reply: bytes | None) -> None:
            if self.transport is None or self.transport.is_closing():
                return
            if reply is not None:
                self.transport.write(reply)
            self.transport.close()

    return GuardedHttpToolsProtocol


def handshake_bounded_loop() -> asyncio.AbstractEventLoop:
    """A uvicorn loop factory: uvloop when installed (as ``loop="auto"`` picks), else asyncio's,
    with ``TLS_HANDSHAKE_TIMEOUT_SECONDS`` for the handshake of every TLS server it creates."""
    try:
        import uvloop

        base: type = uvloop.Loop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        base = asyncio.SelectorEventLoop

    class HandshakeBoundedLoop(base):  # type: ignore[misc, valid-type]
        async def create_server(self, *args, **kwargs):  # type: ignore[override]
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", TLS_HANDSHAKE_TIMEOUT_SECONDS)
            return await super().create_server(*args, **kwargs)

    return HandshakeBoundedLoop()
