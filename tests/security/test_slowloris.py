"""Slow and stuck clients against the real admission server (TLS) and a real Redis sidecar.

Each server gets its connection limit filled with slowloris clients of three kinds: one that
never sends a byte, one that trickles its headers a byte a second, one that sends headers and then
trickles its body. Before the fix these stayed open indefinitely (350 on the webhook, 1,000 on a
sidecar; ~4,700 would have OOM-killed a sidecar). Now every one is closed within the request
deadline, connections beyond the limit get an immediate 503, and memory stays flat.
"""

from __future__ import annotations

import filecmp
import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest

from sidecars.common import app as sidecar_app
from tests.security.conftest import proc_status_kib
from webhook.admission import server as webhook_server

REPO = Path(__file__).resolve().parents[2]
EXTRA = 16  # connections opened beyond the limit: each must be refused at once
SLACK = 3.0  # seconds allowed beyond the deadline (timer granularity, a loaded 2-core machine)


class SlowClient:
    """One slowloris connection: ``idle`` sends nothing, ``headers`` trickles its request line and
    headers, ``body`` sends complete headers and trickles a 100 kB body."""

    def __init__(self, host: str, port: int, kind: str, context: ssl.SSLContext | None):
        self.kind = kind
        raw = socket.create_connection((host, port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost") if context else raw
        self.opened = time.monotonic()
        self.closed_after: float | None = None
        self.received = b""
        self.sock.setblocking(False)
        if kind == "headers":
            self._send(b"POST /mutate HTTP/1.1\r\nHost: x\r\n")
        elif kind == "body":
            self._send(b"POST /mutate HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{")

    def _send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except OSError:
            self._closed()

    def _closed(self) -> None:
        if self.closed_after is None:
            self.closed_after = time.monotonic() - self.opened

    def trickle(self) -> None:
        if self.closed_after is None and self.kind != "idle":
            self._send(b"a" if self.kind == "body" else b"X")

    def poll(self) -> None:
        if self.closed_after is not None:
            return
        try:
            while True:
                data = self.sock.recv(4096)
                if not data:
                    self._closed()
                    return
                self.received += data
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:  # reset, or a TLS EOF without close_notify
            self._closed()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _attack(host: str, port: int, limit: int, timeout: float, pid: int, context: ssl.SSLContext | None) -> dict:
    rss_before = proc_status_kib(pid, "VmRSS")
    kinds = ("idle", "headers", "body")
    clients = [SlowClient(host, port, kinds[i % 3], context) for i in range(limit)]
    time.sleep(0.3)  # the server has made all of them before the extra ones arrive
    extra = [SlowClient(host, port, "idle", context) for _ in range(EXTRA)]
    opened_in = time.monotonic() - clients[0].opened
    rss_full = proc_status_kib(pid, "VmRSS")
    deadline = time.monotonic() + timeout + SLACK + opened_in + 2
    last_trickle = 0.0
    try:
        while time.monotonic() < deadline:
            if time.monotonic() - last_trickle >= 1.0:
                for client in clients:
                    client.trickle()
                last_trickle = time.monotonic()
            for client in clients + extra:
                client.poll()
            if all(c.closed_after is not None for c in clients + extra):
                break
            time.sleep(0.1)
        everyone = clients + extra
        refused = [c for c in everyone if c.received.startswith(b"HTTP/1.1 503")]
        held = [c.closed_after for c in everyone if not c.received.startswith(b"HTTP/1.1 503")]
        figures = {
            "opened": len(everyone),
            "held": len(held),
            "refused_503": len(refused),
            "refused_after_s": max((c.closed_after or 99.0) for c in refused) if refused else 99.0,
            "still_open": sum(1 for h in held if h is None),
            "held_min_s": min((h for h in held if h is not None), default=0.0),
            "held_max_s": max((h for h in held if h is not None), default=0.0),
            "rss_before_mib": rss_before / 1024,
            "rss_full_mib": rss_full / 1024,
            "hwm_mib": proc_status_kib(pid, "VmHWM") / 1024,
        }
    finally:
        for client in clients + extra:
            client.close()
    return figures


def _report(name: str, figures: dict) -> None:
    print(f"\n[slowloris] {name}: {figures['opened']} connections opened; {figures['held']} held, closed after "
          f"{figures['held_min_s']:.1f}-{figures['held_max_s']:.1f}s ({figures['still_open']} still open); "
          f"{figures['refused_503']} beyond the limit refused with 503 within {figures['refused_after_s']:.2f}s; "
          f"RSS {figures['rss_before_mib']:.1f} -> {figures['rss_full_mib']:.1f} MiB with the limit full, "
          f"VmHWM {figures['hwm_mib']:.1f} MiB")


def _check(figures: dict, limit: int, timeout: float, max_hwm_mib: float) -> None:
    assert figures["still_open"] == 0, figures
    # The limit counts every open connection (a probe may hold one), so allow a couple of places.
    assert limit - 2 <= figures["held"] <= limit and figures["held"] + figures["refused_503"] == figures["opened"], figures
    assert figures["refused_after_s"] < 2.0, figures
    assert timeout * 0.8 <= figures["held_min_s"] and figures["held_max_s"] <= timeout + SLACK, figures
    assert figures["hwm_mib"] < max_hwm_mib, figures


def test_webhook_cuts_slow_clients_and_refuses_beyond_its_connection_limit(webhook):
    context = ssl.create_default_context(cafile=str(webhook.ca_file))
    figures = _attack("127.0.0.1", webhook.port, webhook_server.MAX_CONNECTIONS, webhook_server.REQUEST_TIMEOUT_SECONDS,
                      webhook.process.pid, context)
    _report("webhook (TLS)", figures)
    _check(figures, webhook_server.MAX_CONNECTIONS, webhook_server.REQUEST_TIMEOUT_SECONDS, max_hwm_mib=200)
    with httpx.Client(verify=context) as client:  # and it serves again
        assert client.get(webhook.url + "/healthz").status_code == 200
    assert "Traceback" not in webhook.log()


def test_sidecar_cuts_slow_clients_and_refuses_beyond_its_connection_limit(redis_sidecar):
    figures = _attack("127.0.0.1", redis_sidecar.port, sidecar_app.MAX_CONNECTIONS, sidecar_app.REQUEST_TIMEOUT_SECONDS,
                      redis_sidecar.proc.pid, None)
    _report("redis sidecar", figures)
    _check(figures, sidecar_app.MAX_CONNECTIONS, sidecar_app.REQUEST_TIMEOUT_SECONDS, max_hwm_mib=100)
    assert redis_sidecar.get("/livez").status_code == 200
    assert "Traceback" not in redis_sidecar.output()


def test_webhook_cuts_tls_handshakes_that_never_come(webhook):
    """Before the protocol sees a TLS connection, its handshake must finish: asyncio's default gives it
    60 s, at ~50 KiB each. Silent TCP connections are now closed after the handshake timeout."""
    from webhook.admission.httpguard import TLS_HANDSHAKE_TIMEOUT_SECONDS

    pid = webhook.process.pid
    before = proc_status_kib(pid, "VmRSS")
    socks = [socket.create_connection(("127.0.0.1", webhook.port), timeout=5) for _ in range(500)]
    opened = time.monotonic()
    time.sleep(0.5)
    during = proc_status_kib(pid, "VmRSS")
    for sock in socks:
        sock.setblocking(False)
    open_count = len(socks)
    while open_count and time.monotonic() - opened < TLS_HANDSHAKE_TIMEOUT_SECONDS + SLACK + 2:
        time.sleep(0.25)
        open_count = 0
        for sock in socks:
            try:
                if sock.recv(1):
                    open_count += 1
            except BlockingIOError:
                open_count += 1
            except OSError:
                pass
    closed_after = time.monotonic() - opened
    for sock in socks:
        sock.close()
    print(f"\n[handshake] webhook: 500 TCP connections without a ClientHello: RSS {before / 1024:.1f} -> "
          f"{during / 1024:.1f} MiB, all closed after {closed_after:.1f}s ({open_count} still open)")
    assert open_count == 0 and closed_after <= TLS_HANDSHAKE_TIMEOUT_SECONDS + SLACK + 1


def test_webhook_caps_the_request_bytes_held_at_once(webhook):
    """256 connections each sending most of a 6 MiB review and then stalling would hold 1.6 GB; the
    bytes of bodies being read at once are capped (32 MiB) and the excess is answered 503 at once."""
    context = ssl.create_default_context(cafile=str(webhook.ca_file))
    head = (b"POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 6000000\r\n\r\n")
    part = b" " * (2 * 1024 * 1024)
    socks = []
    try:
        for _ in range(24):  # 48 MiB offered
            sock = context.wrap_socket(socket.create_connection(("127.0.0.1", webhook.port), timeout=10),
                                       server_hostname="localhost")
            try:
                sock.sendall(head + part)
            except OSError:
                pass  # already answered 503 and closed
            socks.append(sock)
        time.sleep(1.0)
        answers = []
        for sock in socks:
            sock.settimeout(0.2)
            try:
                answers.append(sock.recv(200))
            except (TimeoutError, OSError):
                answers.append(b"")
        hwm = proc_status_kib(webhook.process.pid, "VmHWM")
    finally:
        for sock in socks:
            sock.close()
    busy = sum(1 for a in answers if a.startswith(b"HTTP/1.1 503"))
    print(f"\n[bodies] webhook: 24 stalled 6 MB reviews (2 MiB sent each): {busy} answered 503 at once, "
          f"{len(answers) - busy} held; VmHWM {hwm / 1024:.1f} MiB")
    assert busy >= 24 - webhook_server.MAX_INFLIGHT_BODY_BYTES // len(part) - 1
    assert all(a == b"" or a.startswith(b"HTTP/1.1 503") for a in answers)
    assert hwm < 200 * 1024


def _send_raw(host: str, port: int, data: bytes, context: ssl.SSLContext | None, read: bool = True) -> bytes:
    raw = socket.create_connection((host, port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="localhost") if context else raw
    try:
        sock.sendall(data)
        if not read:
            time.sleep(0.3)
            return b""
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        sock.close()


@pytest.mark.parametrize("server", ["webhook", "sidecar"])
def test_a_client_that_disconnects_mid_body_leaves_no_traceback(server, webhook, redis_sidecar):
    if server == "webhook":
        port, context, log = webhook.port, ssl.create_default_context(cafile=str(webhook.ca_file)), webhook.log
        path, auth = "/mutate", b""
    else:
        port, context, log = redis_sidecar.port, None, redis_sidecar.output
        path, auth = "/mcp", f"authorization: Bearer {redis_sidecar.token}\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
            "accept: application/json, text/event-stream\r\ncontent-length: 100000\r\n").encode() + auth + b"\r\n"
    for _ in range(5):
        _send_raw("127.0.0.1", port, head + b'{"jsonrpc": "2.0", ' * 100, context, read=False)
    time.sleep(1.0)
    assert "Traceback" not in log() and "Error handling POST request" not in log(), log()[-3000:]


@pytest.mark.parametrize("server", ["webhook", "sidecar"])
def test_oversized_headers_get_431(server, webhook, redis_sidecar):
    if server == "webhook":
        port, context = webhook.port, ssl.create_default_context(cafile=str(webhook.ca_file))
    else:
        port, context = redis_sidecar.port, None
    headers = b"".join(b"x-filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(200))  # ~200 kB
    answer = _send_raw("127.0.0.1", port, b"GET /livez HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n", context)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_the_webhook_and_sidecar_copies_of_httpguard_are_identical():
    """Each image ships only its own package, so the guard exists twice; they must not drift."""
    assert filecmp.cmp(REPO / "webhook" / "admission" / "httpguard.py", REPO / "sidecars" / "common" / "httpguard.py", shallow=False)


def test_sidecar_memory_stays_bounded_under_concurrent_1_mib_bodies(redis_sidecar):
    """Every connection slot carrying a full 1 MiB tools/call at once: the in-flight body budget
    answers the excess with 503 instead of holding (and parsing) 64 MiB of JSON."""
    import asyncio
    import json

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "get", "arguments": {"key": "k" * (1024 * 1024 - 200)}}}).encode()
    headers = {**redis_sidecar.headers, "content-type": "application/json", "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2025-06-18"}

    async def go() -> list[int]:
        limits = httpx.Limits(max_connections=sidecar_app.MAX_CONNECTIONS - 2)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            async def one() -> int:
                try:
                    return (await client.post(redis_sidecar.url, content=body, headers=headers)).status_code
                except httpx.HTTPError:
                    return -1
            return await asyncio.gather(*(one() for _ in range(3 * sidecar_app.MAX_CONNECTIONS)))

    before = proc_status_kib(redis_sidecar.proc.pid, "VmRSS")
    statuses = asyncio.run(go())
    hwm = proc_status_kib(redis_sidecar.proc.pid, "VmHWM")
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    print(f"\n[bodies] {len(statuses)} concurrent 1 MiB tools/call: statuses {counts}; RSS before "
          f"{before / 1024:.1f} MiB, VmHWM {hwm / 1024:.1f} MiB")
    assert set(statuses) <= {200, 503} and 200 in statuses, counts
    assert hwm < 110 * 1024  # the 128 Mi limit, with room for the work of the 200s
    assert redis_sidecar.get("/livez").status_code == 200 and "Traceback" not in redis_sidecar.output()
