"""The Redis sidecar's tools against a real redis-server, through a real MCP client over HTTP."""

from __future__ import annotations

import json
import os

import pytest

from .helpers import call, calls, error_text, list_tools

pytestmark = pytest.mark.slow

WRITE_TOOLS = {"set", "delete", "expire", "persist", "rename", "hset", "hdel", "lpush", "rpush", "lpop", "rpop",
               "sadd", "srem", "zadd", "zrem", "xadd", "xgroup_create", "xreadgroup", "publish", "json_set"}


def ok(result) -> dict:
    assert not result.is_error, error_text(result)
    return result.structured_content


def test_read_only_by_default_lists_no_write_tool(redis_sidecar):
    tools = {t.name: t for t in list_tools(redis_sidecar.url)}
    assert not WRITE_TOOLS & tools.keys()
    assert {"get", "mget", "scan_keys", "hgetall", "lrange", "smembers", "zrange", "xrange", "info",
            "dbsize", "memory_usage", "slowlog_get", "json_get"} <= tools.keys()
    for t in tools.values():
        assert t.annotations.read_only_hint is True and t.annotations.destructive_hint is False, t.name
        assert t.annotations.idempotent_hint is True, t.name
        assert t.output_schema and t.output_schema["type"] == "object", t.name


def test_write_tools_are_listed_with_honest_annotations_when_enabled(redis_sidecar_rw):
    tools = {t.name: t for t in list_tools(redis_sidecar_rw.url)}
    assert WRITE_TOOLS <= tools.keys()
    assert tools["delete"].annotations.destructive_hint is True
    assert tools["lpush"].annotations.destructive_hint is False and tools["lpush"].annotations.idempotent_hint is False
    assert all(t.annotations.read_only_hint is False for n, t in tools.items() if n in WRITE_TOOLS)
    # No tool can flush a database or change configuration, whatever the mode.
    assert not [n for n in tools if "flush" in n or "config" in n or n in {"shutdown", "eval", "execute"}]


def test_read_only_sidecar_refuses_a_write_tool_call(redis_sidecar):
    result = call(redis_sidecar.url, "set", {"key": "k", "value": "v"})
    assert result.is_error and "set" in error_text(result)


def test_strings_with_password_protected_redis(redis_sidecar_rw, redis_with_password):
    out = calls(redis_sidecar_rw.url, [
        ("set", {"key": "greeting", "value": "hello wörld", "expire_seconds": 300}),
        ("get", {"key": "greeting"}),
        ("ttl", {"key": "greeting"}),
        ("mget", {"keys": ["greeting", "missing"]}),
        ("set", {"key": "greeting", "value": "x", "only_if_absent": True}),
    ])
    assert ok(out[0])["ok"] is True
    assert ok(out[1]) == {"key": "greeting", "exists": True, "value": "hello wörld", "length": 12, "truncated": False}
    assert 0 < ok(out[2])["ttl_seconds"] <= 300
    values = ok(out[3])["values"]
    assert [v["exists"] for v in values] == [True, False]
    assert ok(out[4])["ok"] is False
    assert b"hello" in redis_with_password.command("GET", "greeting")


def test_big_values_and_collections_are_capped_with_a_marker(redis_sidecar_rw):
    # The rw sidecar runs with MCP_MAX_VALUE_BYTES=1024, MCP_MAX_ITEMS=20.
    out = calls(redis_sidecar_rw.url, [
        ("set", {"key": "big", "value": "x" * 200_000}),
        ("get", {"key": "big"}),
        ("rpush", {"key": "biglist", "values": [str(i) for i in range(50)]}),
        ("lrange", {"key": "biglist"}),
        ("hset", {"key": "bighash", "fields": {f"f{i}": "v" for i in range(60)}}),
        ("hgetall", {"key": "bighash"}),
        ("sadd", {"key": "bigset", "members": [f"m{i}" for i in range(70)]}),
        ("smembers", {"key": "bigset"}),
        ("zadd", {"key": "bigz", "members": {f"m{i}": i for i in range(30)}}),
        ("zrange", {"key": "bigz", "reverse": True}),
    ])
    big = ok(out[1])
    assert big["truncated"] is True and big["length"] == 200_000 and len(big["value"]) == 1024
    lst = ok(out[3])
    assert lst["truncated"] is True and lst["length"] == 50 and lst["items"] == [str(i) for i in range(20)]
    h = ok(out[5])
    assert h["truncated"] is True and h["length"] == 60 and len(h["fields"]) == 20
    s = ok(out[7])
    assert s["truncated"] is True and s["length"] == 70 and 0 < len(s["items"]) <= 20 and s["cursor"] != 0
    z = ok(out[9])
    assert z["truncated"] is True and z["members"][0] == {"member": "m29", "score": 29.0} and len(z["members"]) == 20


def test_keys_hashes_lists_sets(redis_sidecar_rw):
    out = calls(redis_sidecar_rw.url, [
        ("hset", {"key": "user:1", "fields": {"name": "Ada", "lang": "en"}}),
        ("hget", {"key": "user:1", "field": "name"}),
        ("hlen", {"key": "user:1"}),
        ("hdel", {"key": "user:1", "fields": ["lang"]}),
        ("key_type", {"key": "user:1"}),
        ("lpush", {"key": "q", "values": ["b", "a"]}),
        ("rpop", {"key": "q"}),
        ("llen", {"key": "q"}),
        ("sismember", {"key": "bigset", "member": "m3"}),
        ("scard", {"key": "bigset"}),
        ("srem", {"key": "bigset", "members": ["m3"]}),
        ("exists", {"keys": ["user:1", "q", "nope"]}),
        ("expire", {"key": "q", "seconds": 100}),
        ("persist", {"key": "q"}),
        ("rename", {"key": "q", "new_key": "user:1"}),
        ("rename", {"key": "q", "new_key": "queue"}),
        ("delete", {"keys": ["queue", "nope"]}),
        ("zscore", {"key": "bigz", "member": "m7"}),
        ("zcard", {"key": "bigz"}),
        ("zrem", {"key": "bigz", "members": ["m7"]}),
    ])
    assert ok(out[1])["value"] == "Ada"
    assert ok(out[2])["count"] == 2
    assert ok(out[3])["count"] == 1
    assert ok(out[4])["type"] == "hash"
    assert ok(out[6])["items"] == ["b"]
    assert ok(out[7])["count"] == 1
    assert ok(out[8])["is_member"] is True
    assert ok(out[9])["count"] == 70
    assert ok(out[10])["count"] == 1
    assert ok(out[11])["count"] == 2
    assert ok(out[12])["ok"] and ok(out[13])["ok"]
    assert ok(out[14]) == {"ok": False, "detail": "user:1 already exists"}
    assert ok(out[15])["ok"] is True
    assert ok(out[16])["count"] == 1
    assert ok(out[17])["score"] == 7.0 and ok(out[18])["count"] == 30 and ok(out[19])["count"] == 1


def test_scan_keys_with_pattern_and_cap(redis_sidecar_rw, redis_with_password):
    for i in range(45):
        redis_with_password.command("SET", f"scan:{i}", "v")
    first = ok(call(redis_sidecar_rw.url, "scan_keys", {"pattern": "scan:*", "limit": 10}))
    assert 0 < len(first["keys"]) <= 10 and all(k.startswith("scan:") for k in first["keys"])
    assert first["truncated"] is True
    # Following the cursor reaches every key exactly once or more, never beyond the cap per call.
    seen, cursor = set(), 0
    for _ in range(100):
        page = ok(call(redis_sidecar_rw.url, "scan_keys", {"pattern": "scan:*", "cursor": cursor, "limit": 500}))
        assert len(page["keys"]) <= 20  # MCP_MAX_ITEMS caps even a larger limit
        seen.update(page["keys"])
        cursor = page["cursor"]
        if cursor == 0:
            break
    assert seen == {f"scan:{i}" for i in range(45)}
    only_hashes = ok(call(redis_sidecar_rw.url, "scan_keys", {"pattern": "*", "type": "hash"}))
    assert only_hashes["keys"] and all(k in {"user:1", "bighash"} for k in only_hashes["keys"])


def test_streams_and_consumer_groups(redis_sidecar_rw):
    out = calls(redis_sidecar_rw.url, [
        ("xgroup_create", {"key": "events", "group": "workers", "start_id": "0", "create_stream": True}),
        ("xadd", {"key": "events", "fields": {"type": "login", "user": "ada"}}),
        ("xadd", {"key": "events", "fields": {"type": "logout", "user": "ada"}}),
        ("xlen", {"key": "events"}),
        ("xrange", {"key": "events", "count": 1}),
        ("xrange", {"key": "events", "reverse": True}),
        ("xreadgroup", {"key": "events", "group": "workers", "consumer": "c1", "count": 5}),
        ("xinfo_groups", {"key": "events"}),
        ("xreadgroup", {"key": "events", "group": "workers", "consumer": "c1", "pending_only": True}),
    ])
    assert ok(out[3])["count"] == 2
    first = ok(out[4])
    assert first["truncated"] is True and first["entries"][0]["fields"] == {"type": "login", "user": "ada"}
    assert ok(out[5])["entries"][0]["fields"]["type"] == "logout"
    assert len(ok(out[6])["entries"]) == 2
    assert ok(out[7])["groups"] == [{"name": "workers", "consumers": 1, "pending": 2,
                                     "last_delivered_id": ok(out[2])["id"]}]
    assert len(ok(out[8])["entries"]) == 2


def test_publish_and_server_tools(redis_sidecar_rw):
    out = calls(redis_sidecar_rw.url, [
        ("publish", {"channel": "news", "message": "hi"}),
        ("pubsub_channels", {}),
        ("info", {"section": "server"}),
        ("dbsize", {}),
        ("memory_usage", {"key": "big"}),
        ("memory_usage", {"key": "nope"}),
        ("slowlog_get", {"count": 5}),
    ])
    assert ok(out[0]) == {"channel": "news", "receivers": 0}
    assert ok(out[1])["channels"] == []
    info = ok(out[2])
    assert info["section"] == "server" and "redis_version" in info["info"]
    assert ok(out[3])["count"] > 10
    assert ok(out[4])["bytes"] > 200_000
    assert ok(out[5])["bytes"] is None
    assert isinstance(ok(out[6])["entries"], list)


def test_json_tools_say_clearly_when_the_module_is_missing(redis_sidecar_rw):
    out = calls(redis_sidecar_rw.url, [
        ("json_set", {"key": "doc", "value": json.dumps({"a": 1})}),
        ("json_set", {"key": "doc", "value": "{not json"}),
        ("json_get", {"key": "greeting"}),
    ])
    assert out[0].is_error and "RedisJSON module is not loaded" in error_text(out[0])
    assert out[1].is_error and "not valid JSON" in error_text(out[1])
    assert out[2].is_error and "RedisJSON module is not loaded" in error_text(out[2])


def test_wrong_type_is_a_clear_tool_error_not_a_crash(redis_sidecar_rw):
    result = call(redis_sidecar_rw.url, "get", {"key": "user:1"})
    assert result.is_error and "WRONGTYPE" in error_text(result)
    assert redis_sidecar_rw.alive()


def _status_kib(pid: int, name: str) -> int:
    from pathlib import Path

    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(name + ":"))
    return int(line.split()[1])


def test_huge_keys_cannot_push_the_process_past_its_memory_limit(redis_server):
    """40 MB strings, hash fields and list elements: answers stay capped and the peak RSS stays far
    below the container's 128Mi limit (a naive GET/HGETALL/LRANGE would load 120 MB at once).
    tests/security/test_redis_memory.py has the adversarial cases (binary data, hidden tails)."""
    from .conftest import redis_env
    from .helpers import SidecarProcess

    huge = "h" * (40 * 1024 * 1024)
    redis_server.command("SET", "huge:string", huge)
    redis_server.command("HSET", "huge:hash", "small", "ok", "big", huge)
    for _ in range(3):
        redis_server.command("RPUSH", "huge:list", huge)
    redis_server.command("SADD", "huge:set", "a" * 5_000_000, "b" * 5_000_000, "c" * 5_000_000)
    with SidecarProcess("redis", redis_env(redis_server)) as sidecar:  # defaults: 64 KiB values, 100 items
        out = calls(sidecar.url, [
            ("get", {"key": "huge:string"}),
            ("hget", {"key": "huge:hash", "field": "big"}),
            ("hgetall", {"key": "huge:hash"}),
            ("lrange", {"key": "huge:list"}),
            ("smembers", {"key": "huge:set"}),
            ("xrange", {"key": "huge:list"}),
        ])
        peak_mib = _status_kib(sidecar.proc.pid, "VmHWM") / 1024
    string = ok(out[0])
    assert string["truncated"] and string["length"] == len(huge) and len(string["value"]) == 64 * 1024
    assert ok(out[1]) == {"key": "huge:hash", "field": "big", "value": None, "length": len(huge), "truncated": True}
    fields = ok(out[2])["fields"]
    assert fields["small"] == "ok" and ok(out[2])["truncated"] is True
    assert fields["big"] == {"length": len(huge), "truncated": True, "text": "h" * 64 * 1024, "base64": None}
    # Elements nobody can size before reading come back as a head and their real length.
    items = ok(out[3])["items"]
    assert items and all(i["length"] == len(huge) and len(i["text"]) == 64 * 1024 for i in items)
    members = ok(out[4])
    assert members["truncated"] is True and members["length"] == 3
    assert 1 <= len(members["items"]) <= 3
    assert all(v["length"] == 5_000_000 and len(v["text"]) == 64 * 1024 for v in members["items"])
    assert out[5].is_error and "WRONGTYPE" in error_text(out[5])
    assert peak_mib < 110, f"peak RSS {peak_mib:.0f} MiB"


def test_string_edges_empty_missing_and_exactly_at_the_cap(redis_sidecar_rw):
    # MCP_MAX_VALUE_BYTES=1024 on this sidecar.
    out = calls(redis_sidecar_rw.url, [
        ("set", {"key": "edge:empty", "value": ""}),
        ("set", {"key": "edge:at", "value": "a" * 1024}),
        ("set", {"key": "edge:over", "value": "b" * 1025}),
        ("get", {"key": "edge:empty"}),
        ("get", {"key": "edge:missing"}),
        ("get", {"key": "edge:at"}),
        ("get", {"key": "edge:over"}),
        ("hset", {"key": "edge:hash", "fields": {"a": "1"}}),
        ("mget", {"keys": ["edge:empty", "edge:missing", "edge:over", "edge:hash"]}),
    ])
    assert ok(out[3]) == {"key": "edge:empty", "exists": True, "value": "", "length": 0, "truncated": False}
    assert ok(out[4]) == {"key": "edge:missing", "exists": False, "value": None, "length": 0, "truncated": False}
    assert ok(out[5])["truncated"] is False and ok(out[5])["length"] == 1024
    assert ok(out[6])["truncated"] is True and ok(out[6])["length"] == 1025 and len(ok(out[6])["value"]) == 1024
    many = ok(out[8])["values"]
    assert [(v["exists"], v["length"], v["truncated"]) for v in many] == [
        (True, 0, False), (False, 0, False), (True, 1025, True), (True, 0, False)]


# ------------------------------------------------------------------ binary-safe data (issue 10, wire)
def _b64(b: bytes) -> dict:
    import base64

    return {"base64": base64.b64encode(b).decode()}


def test_non_utf8_keys_and_values_round_trip_as_base64(redis_sidecar, redis_server):
    """A key that is not UTF-8 comes back from scan_keys as {"base64"} and names the same key in later calls."""
    import redis

    key, value = b"bin:\xff\xfe\x00key", b"\x80\x81\x00\xc3(" * 10
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    client.set(key, value)
    client.hset(b"bin:\xffhash", mapping={b"\xfename": value, b"text": b"plain"})
    client.rpush(b"bin:\xfflist", value, "héllo")
    client.close()
    out = calls(redis_sidecar.url, [
        ("scan_keys", {"pattern": "bin:*", "limit": 100}),
        ("get", {"key": _b64(key)}),
        ("key_type", {"key": _b64(key)}),
        ("hgetall", {"key": _b64(b"bin:\xffhash")}),
        ("lrange", {"key": _b64(b"bin:\xfflist")}),
        ("hget", {"key": _b64(b"bin:\xffhash"), "field": _b64(b"\xfename")}),
        ("get", {"key": {"base64": "not base64!"}}),
        ("exists", {"keys": [_b64(key), "bin:missing"]}),
    ])
    assert _b64(key) in ok(out[0])["keys"]
    assert ok(out[1]) == {"key": _b64(key), "exists": True, "value": _b64(value), "length": 50, "truncated": False}
    assert ok(out[2])["type"] == "string"
    h = ok(out[3])
    assert h["fields"] == {"text": "plain"}
    assert h["binary_fields"] == [{"field": _b64(b"\xfename"), "value": _b64(value)}]
    assert ok(out[4])["items"] == [_b64(value), "héllo"]  # UTF-8 text stays a plain string
    assert ok(out[5])["value"] == _b64(value)
    assert out[6].is_error and "base64" in error_text(out[6])
    assert ok(out[7])["count"] == 1


def test_binary_writes_store_the_exact_bytes(redis_sidecar_rw, redis_with_password):
    import redis

    key, value = b"w:\xff\x00", bytes(range(256))
    out = calls(redis_sidecar_rw.url, [
        ("set", {"key": _b64(key), "value": _b64(value)}),
        ("rpush", {"key": "w:list", "values": [_b64(b"\x00\xff"), "text"]}),
        ("get", {"key": _b64(key)}),
    ])
    assert ok(out[0])["ok"] is True and ok(out[1])["count"] == 2
    client = redis.Redis(host=redis_with_password.host, port=redis_with_password.port,
                         password=redis_with_password.password)
    try:
        assert client.get(key) == value
        assert client.lrange("w:list", 0, -1) == [b"\x00\xff", b"text"]
    finally:
        client.close()
    # MCP_MAX_VALUE_BYTES=1024 here: the 256-byte value fits and comes back whole.
    assert ok(out[2])["value"] == _b64(value)


# ------------------------------------------------------------------ paging under MCP_MAX_RESULT_BYTES
def test_results_stay_under_the_byte_budget_and_say_where_to_continue(redis_server):
    """MCP_MAX_RESULT_BYTES=16 KiB: every answer fits it, and following next_start / cursor /
    next_start_id reads every element exactly as stored."""
    import httpx
    import redis

    from .conftest import redis_env
    from .helpers import SidecarProcess

    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    values = [(b"%03d" % i) + b"v" * 997 for i in range(50)]
    client.delete("page:list", "page:hash", "page:z", "page:stream")
    client.rpush("page:list", *values)
    client.hset("page:hash", mapping={b"f%d" % i: v for i, v in enumerate(values)})
    client.zadd("page:z", {v: i for i, v in enumerate(values)})
    for v in values:
        client.xadd("page:stream", {"v": v})
    client.close()
    budget = 16 * 1024
    env = redis_env(redis_server, MCP_MAX_RESULT_BYTES=str(budget), MCP_AUTH="none")
    with SidecarProcess("redis", env) as sidecar:
        def tool(name: str, args: dict) -> dict:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}}
            resp = httpx.post(sidecar.url, json=body, timeout=30, headers={
                "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"})
            assert len(resp.content) <= budget, (name, len(resp.content))
            result = resp.json()["result"]
            assert not result.get("isError"), result
            return result["structuredContent"]

        got, start = [], 0
        for _ in range(60):
            page = tool("lrange", {"key": "page:list", "start": start})
            got += page["items"]
            if page["next_start"] is None:
                break
            assert page["truncated"] is True and 0 < len(page["items"]) < 50
            start = page["next_start"]
        assert got == [v.decode() for v in values]

        fields, cursor = {}, 0
        for _ in range(60):
            page = tool("hgetall", {"key": "page:hash", "cursor": cursor})
            fields.update(page["fields"])
            cursor = page["cursor"]
            if cursor == 0:
                break
        assert fields == {f"f{i}": v.decode() for i, v in enumerate(values)}

        members, start = [], 0
        for _ in range(60):
            page = tool("zrange", {"key": "page:z", "start": start})
            members += [m["member"] for m in page["members"]]
            if page["next_start"] is None:
                break
            start = page["next_start"]
        assert members == [v.decode() for v in values]

        entries, start = [], "-"
        for _ in range(60):
            page = tool("xrange", {"key": "page:stream", "start": start, "count": 100})
            entries += [e["fields"]["v"] for e in page["entries"]]
            if page["next_start_id"] is None:
                break
            start = page["next_start_id"]
        assert entries == [v.decode() for v in values]

        many = tool("mget", {"keys": ["page:missing"] * 5})
        assert [v["exists"] for v in many["values"]] == [False] * 5


# ------------------------------------------------------------------ writes under faults (issue 11, part 4)
def _stall(redis_server, seconds: float):
    """SIGSTOP the real redis-server for ``seconds``: it accepts connections (the kernel does), answers
    nothing, then processes whatever its sockets hold, as a server stuck in a slow command would."""
    import signal
    import threading

    pid = redis_server._proc.pid
    os.kill(pid, signal.SIGSTOP)
    timer = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
    timer.start()
    return timer


def test_a_timed_out_rpush_is_never_sent_twice_and_the_timeout_is_honoured():
    """A 1.5 s stall with MCP_BACKEND_TIMEOUT=1: the client used to time out, reconnect when the server
    came back and send RPUSH again, so it landed twice and the caller was told count 2."""
    import time

    from tests.backends.redis_server import RedisServer

    from .conftest import redis_env
    from .helpers import SidecarProcess

    with RedisServer() as redis_server:
        env = redis_env(redis_server, MCP_READ_ONLY="false", MCP_BACKEND_TIMEOUT="1", MCP_AUTH="none")
        with SidecarProcess("redis", env) as sidecar:
            assert ok(call(sidecar.url, "dbsize"))["count"] == 0  # warm: one pooled connection
            _stall(redis_server, 1.5)
            t0 = time.monotonic()
            result = call(sidecar.url, "rpush", {"key": "jobs", "values": ["job-1"]})
            write_took = time.monotonic() - t0
            time.sleep(1.0)  # the server is back and has run what its sockets held
            llen = int(redis_server.command("LLEN", "jobs").strip()[1:])
            timer = _stall(redis_server, 3)
            t0 = time.monotonic()
            read = call(sidecar.url, "hgetall", {"key": "jobs"})
            read_took = time.monotonic() - t0
            timer.join()
    assert llen == 1, f"rpush landed {llen} times"
    assert result.is_error
    assert "MCP_BACKEND_TIMEOUT" in error_text(result) and "may or may not have been applied" in error_text(result)
    # One deadline per call, whatever the number of commands or reconnects inside it.
    assert write_took < 1.6 and read_took < 1.6, (write_took, read_took)
    assert read.is_error and "did not answer within MCP_BACKEND_TIMEOUT (1s)" in error_text(read)


def test_an_exhausted_connection_pool_says_busy_not_unreachable():
    import threading
    import time

    from tests.backends.redis_server import RedisServer

    from .conftest import redis_env
    from .helpers import SidecarProcess

    with RedisServer() as redis_server:
        env = redis_env(redis_server, REDIS_MAX_CONNECTIONS="1", MCP_BACKEND_TIMEOUT="3", MCP_AUTH="none")
        with SidecarProcess("redis", env) as sidecar:
            timer = _stall(redis_server, 3.5)
            holder = threading.Thread(target=call, args=(sidecar.url, "dbsize"))
            holder.start()
            time.sleep(0.3)
            t0 = time.monotonic()
            second = call(sidecar.url, "dbsize")
            took = time.monotonic() - t0
            holder.join()
            timer.join()
            health = sidecar.get("/health").json()
    assert second.is_error and "busy" in error_text(second) and "unreachable" not in error_text(second)
    assert took < 2.5
    assert health["status"] == "ok"


def test_resp_reader_keeps_only_the_head_of_an_oversized_element(redis_server):
    """protocol.py hooks redis-py's private parser (``_read``): if an upgrade moves it, this fails
    instead of the sidecar silently holding whole elements again."""
    import asyncio

    from sidecars.common.config import Limits
    from sidecars.redis.backend import RedisBackend
    from sidecars.redis.config import RedisSettings
    from sidecars.redis.protocol import CutBytes

    redis_server.command("SET", "reader:big", "z" * 3_000_000)
    redis_server.command("RPUSH", "reader:list", "a", "y" * 2_000_000, "b")

    async def go():
        backend = RedisBackend(RedisSettings(host=redis_server.host, port=redis_server.port), timeout=5,
                               limits=Limits(max_value_bytes=1024, max_result_bytes=4096))
        try:
            whole = await backend.client.get("reader:big")
            items = await backend.client.lrange("reader:list", 0, -1)
            after = await backend.client.get("reader:big")  # the connection is reusable after a skip
            return whole, items, after
        finally:
            await backend.close()

    whole, items, after = asyncio.run(go())
    assert isinstance(whole, CutBytes) and whole.length == 3_000_000 and whole == whole and len(whole) == 1025
    assert items[0] == b"a" and items[2] == b"b"
    assert isinstance(items[1], CutBytes) and items[1].length == 2_000_000 and bytes(items[1]) == b"y" * 1025
    assert isinstance(after, CutBytes) and after.length == 3_000_000
