"""Adversarial Redis data against a real sidecar process: the answer stays within MCP_MAX_RESULT_BYTES
and the process's peak RSS within the 128 MiB container limit, whatever the keys hold (issue 11, part 3).

Each case resets the sidecar's peak-RSS counter (``/proc/PID/clear_refs``), makes one call and reads
``VmHWM``, so the figure is that call's own peak. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.backends.redis_server import RedisServer
from tests.sidecars.conftest import redis_env
from tests.sidecars.helpers import SidecarProcess

pytestmark = pytest.mark.slow

LIMIT_MIB = 128  # the sidecar container's memory limit
BUDGET = 1024 * 1024  # MCP_MAX_RESULT_BYTES default
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-11-25"}
BIN = 64 * 1024


@pytest.fixture(scope="module")
def hostile():
    """A Redis holding the issue's adversarial shapes, and a sidecar with default limits in front of it."""
    import redis

    with RedisServer() as server:
        r = redis.Redis(host=server.host, port=server.port)
        blobs = [os.urandom(BIN) for _ in range(100)]
        p = r.pipeline(transaction=False)
        for i, b in enumerate(blobs):
            p.set(b"bin:%d" % i, b)
        p.rpush("bin:list", *blobs)
        p.hset("bin:hash", mapping={b"f%d" % i: b for i, b in enumerate(blobs)})
        p.zadd("bin:zset", {b: i for i, b in enumerate(blobs)})
        for b in blobs:
            p.xadd("bin:stream", {b"v": b})
        p.execute()
        tail = b"t" * (10 * 1024 * 1024)
        r.rpush("tail:list", *[b"small"] * 20, tail)  # MEMORY USAGE with 5 samples sees only the head
        r.zadd("tail:zset", {**{b"m%d" % i: i for i in range(20)}, tail: 99})
        for i in range(60):  # 60 x 2 MB field names
            r.hset("names:hash", os.urandom(2 * 1024 * 1024), b"v%d" % i)
        r.close()
        env = redis_env(server, MCP_AUTH="none")
        with SidecarProcess("redis", env) as sidecar:
            yield sidecar


def _status_kib(pid: int, name: str) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(name + ":"))
    return int(line.split()[1])


def _post(sidecar: SidecarProcess, tool: str, args: dict) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}}
    return httpx.post(sidecar.url, json=body, headers={**MCP_HEADERS, **getattr(sidecar, "headers", {})}, timeout=60)


CASES = [
    ("get", {"key": "bin:0"}),
    ("mget", {"keys": [f"bin:{i}" for i in range(100)]}),
    ("lrange", {"key": "bin:list"}),
    ("hgetall", {"key": "bin:hash"}),
    ("zrange", {"key": "bin:zset"}),
    ("xrange", {"key": "bin:stream", "count": 100}),
    ("smembers", {"key": "bin:zset"}),  # wrong type: an error, cheaply
    ("lrange", {"key": "tail:list"}),
    ("zrange", {"key": "tail:zset"}),
    ("hgetall", {"key": "names:hash"}),
    ("scan_keys", {"pattern": "*", "limit": 100}),
]


@pytest.mark.parametrize("tool, args", CASES, ids=[f"{t}-{a.get('key', 'keys')}" for t, a in CASES])
def test_adversarial_call_stays_within_budget_and_memory_limit(hostile, tool, args):
    pid = hostile.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    t0 = time.monotonic()
    resp = _post(hostile, tool, args)
    elapsed = time.monotonic() - t0
    peak_mib = _status_kib(pid, "VmHWM") / 1024
    print(f"\n{tool} {args.get('key', '')}: response {len(resp.content)} bytes, peak RSS {peak_mib:.1f} MiB, "
          f"{elapsed:.2f} s")
    assert resp.status_code == 200
    assert len(resp.content) <= BUDGET, f"{len(resp.content)} bytes"
    assert peak_mib < LIMIT_MIB, f"peak RSS {peak_mib:.0f} MiB"
    result = resp.json()["result"]
    if tool != "smembers":
        assert not result.get("isError"), result["content"][0]["text"][:300]
    assert hostile.alive()


def test_binary_values_come_back_as_base64_and_are_marked_when_cut(hostile):
    import base64

    out = _post(hostile, "lrange", {"key": "bin:list", "stop": 2}).json()["result"]["structuredContent"]
    first = out["items"][0]
    assert set(first) == {"base64"} and len(base64.b64decode(first["base64"])) == BIN
    tail = _post(hostile, "lrange", {"key": "tail:list", "start": -1}).json()["result"]["structuredContent"]
    cut = tail["items"][0]
    assert cut["truncated"] is True and cut["length"] == 10 * 1024 * 1024 and len(cut["text"]) == BIN


def test_event_loop_stays_responsive_during_a_big_mget(hostile):
    """/livez answers quickly while a 100 x 64 KiB binary mget is being served."""
    async def go() -> tuple[float, float]:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "mget", "arguments": {"keys": [f"bin:{i}" for i in range(100)]}}}
            big = [asyncio.create_task(client.post(hostile.url, json=body,
                                                   headers={**MCP_HEADERS, **getattr(hostile, "headers", {})}))
                   for _ in range(4)]
            await asyncio.sleep(0.005)
            worst = 0.0
            while not all(t.done() for t in big):
                t0 = time.monotonic()
                assert (await client.get(hostile.base + "/livez")).status_code == 200
                worst = max(worst, time.monotonic() - t0)
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            await asyncio.gather(*big)
            return worst, time.monotonic() - t0
    worst, _ = asyncio.run(go())
    print(f"\nworst /livez latency during 4 concurrent big mgets: {worst * 1000:.0f} ms")
    assert worst < 0.25, f"/livez took {worst:.2f} s"


def test_the_largest_value_cap_still_fits_the_result_budget():
    """MCP_MAX_VALUE_BYTES at its 8 MiB maximum with 4 MB values that escape worst (control characters)
    or do not decode at all: answers stay under MCP_MAX_RESULT_BYTES and memory under the limit."""
    import redis

    with RedisServer() as server:
        r = redis.Redis(host=server.host, port=server.port)
        r.set("ctl", b"\x01" * 4_000_000)
        r.set("bin", os.urandom(4_000_000))
        r.rpush("mixed", b'"' * 3_000_000, os.urandom(3_000_000))
        r.close()
        env = redis_env(server, MCP_AUTH="none", MCP_MAX_VALUE_BYTES=str(8 * 1024 * 1024))
        with SidecarProcess("redis", env) as sidecar:
            for tool, args in [("get", {"key": "ctl"}), ("get", {"key": "bin"}), ("mget", {"keys": ["ctl", "bin"] * 8}),
                               ("lrange", {"key": "mixed"})]:
                Path(f"/proc/{sidecar.proc.pid}/clear_refs").write_text("5")
                resp = _post(sidecar, tool, args)
                peak_mib = _status_kib(sidecar.proc.pid, "VmHWM") / 1024
                print(f"\n8 MiB cap, {tool}: response {len(resp.content)} bytes, peak RSS {peak_mib:.1f} MiB")
                result = resp.json()["result"]
                assert not result.get("isError") and result["structuredContent"]["truncated"] is True
                assert len(resp.content) <= BUDGET and peak_mib < LIMIT_MIB
