"""The Redis tools, modelled on the official redis-mcp-server's set, minus anything that can flush a
database or change server configuration.

Every read asks Redis for a bounded slice (GETRANGE, LRANGE, SSCAN/HSCAN/SCAN with COUNT, XRANGE
COUNT) so the sidecar never holds more than ``MCP_MAX_ITEMS`` entries of ``MCP_MAX_VALUE_BYTES``.
"""

import json
from typing import Annotated, Any

from pydantic import Field

from sidecars.common import capping
from sidecars.common.app import Sidecar
from sidecars.common.tools import fail

from . import models as m

Key = Annotated[str, Field(min_length=1, description="Redis key")]
SCAN_ROUNDS = 50  # SCAN iterations per call: bounded work even on a huge keyspace
# Redis cannot read part of a list element, set member or hash field, so before reading an
# aggregate we ask MEMORY USAGE how big it is and read no more than this many bytes of it.
READ_BUDGET = 8 * 1024 * 1024


def _s(raw: Any) -> str:
    """Redis bytes → text for keys, fields and members (they are short; values are capped separately)."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="backslashreplace")
    return str(raw)


def register(sidecar: Sidecar) -> None:
    r = sidecar.backend.client
    limits = sidecar.settings.limits
    tool = sidecar.registry
    vmax, imax = limits.max_value_bytes, limits.max_items

    def value(raw: Any) -> tuple[str | None, bool]:
        return (None, False) if raw is None else capping.text(raw, vmax)

    async def _string(key: str) -> m.StringValue:
        # One GETRANGE answers the common case (a value that fits) in a single round trip; only a
        # value that fills the window needs STRLEN, and only an empty answer needs EXISTS.
        head = await r.getrange(key, 0, vmax)
        return await _finish_string(key, head)

    async def _finish_string(key: str, head: bytes) -> m.StringValue:
        if not head:
            if not await r.exists(key):
                return m.StringValue(key=key, exists=False, value=None, length=0)
            return m.StringValue(key=key, exists=True, value="", length=0)
        length = len(head) if len(head) <= vmax else await r.strlen(key)
        text, cut = capping.text(head, vmax)
        return m.StringValue(key=key, exists=True, value=text, length=length, truncated=cut or length > vmax)

    async def _affordable(key: str, length: int) -> int:
        """How many elements of an aggregate fit READ_BUDGET (at most MCP_MAX_ITEMS); refuses when even one would not."""
        if length == 0:
            return 0
        usage = await r.memory_usage(key) or 0
        if usage <= READ_BUDGET:
            return imax
        average = usage / length
        if average > READ_BUDGET:
            raise fail(f"{key} holds {length} element(s) of about {int(average)} bytes each; that is too large to "
                       f"read through this server (budget {READ_BUDGET} bytes)")
        return max(1, min(imax, int(READ_BUDGET // average)))

    # ----------------------------------------------------------------- strings
    @tool.read("Get a string value")
    async def get(key: Key) -> m.StringValue:
        """Read a string key. Values longer than MCP_MAX_VALUE_BYTES are cut and marked truncated."""
        return await _string(key)

    @tool.read("Get several string values")
    async def mget(keys: Annotated[list[str], Field(min_length=1)]) -> m.MultiValue:
        """Read several string keys at once (at most MCP_MAX_ITEMS keys)."""
        kept, cut = capping.items(keys, imax)
        async with r.pipeline(transaction=False) as p:
            for k in kept:
                p.getrange(k, 0, vmax)
            heads = await p.execute(raise_on_error=False)
        values = []
        for k, head in zip(kept, heads):
            if isinstance(head, Exception):  # not a string (WRONGTYPE): present, but no string value
                values.append(m.StringValue(key=k, exists=True, value=None, length=0))
            else:
                values.append(await _finish_string(k, head))
        return m.MultiValue(values=values, truncated=cut)

    @tool.write(destructive=True, idempotent=True, title="Set a string value")
    async def set(key: Key, value: str,
                  expire_seconds: Annotated[int | None, Field(gt=0)] = None,
                  only_if_absent: bool = False) -> m.Written:
        """Set a string key, optionally with an expiry in seconds and only if it does not exist yet (NX)."""
        done = await r.set(key, value, ex=expire_seconds, nx=only_if_absent)
        return m.Written(ok=bool(done), detail="" if done else "key exists (only_if_absent)")

    # -------------------------------------------------------------------- keys
    @tool.read("Scan keys by pattern")
    async def scan_keys(pattern: str = "*", cursor: Annotated[int, Field(ge=0)] = 0,
                        limit: Annotated[int, Field(ge=1)] = 100,
                        type: str | None = None) -> m.KeyList:
        """Incrementally list keys matching a glob pattern (never KEYS). Returns at most `limit`
        (capped by MCP_MAX_ITEMS) keys and a cursor to continue; optional type filter (string, hash…)."""
        want = min(limit, imax)
        found: list[str] = []
        count = want
        for _ in range(SCAN_ROUNDS):
            next_cursor, batch = await r.scan(cursor=cursor, match=pattern, count=count, _type=type)
            if len(found) + len(batch) > want:
                if found:
                    break  # resume from this batch next time instead of dropping part of it
                if count > 1:
                    count = max(1, count // 4)  # COUNT is only a hint: ask the same cursor for less
                    continue
            found.extend(_s(k) for k in batch)
            cursor = next_cursor
            if cursor == 0 or len(found) >= want:
                break
        # Only a single oversized SCAN batch at COUNT 1 can exceed the cap; its tail is cut and marked.
        return m.KeyList(keys=found[:imax], cursor=int(cursor), truncated=cursor != 0 or len(found) > imax)

    @tool.read("Type of a key")
    async def key_type(key: Key) -> m.KeyType:
        """The Redis type of a key (`none` when it does not exist)."""
        return m.KeyType(key=key, type=_s(await r.type(key)))

    @tool.read("Time to live of a key")
    async def ttl(key: Key) -> m.KeyTTL:
        """Seconds until the key expires; -1 without expiry, -2 when the key does not exist."""
        return m.KeyTTL(key=key, ttl_seconds=await r.ttl(key))

    @tool.read("Count existing keys")
    async def exists(keys: Annotated[list[str], Field(min_length=1, max_length=1000)]) -> m.Count:
        """How many of the given keys exist."""
        return m.Count(count=await r.exists(*keys))

    @tool.write(destructive=True, idempotent=True, title="Delete keys")
    async def delete(keys: Annotated[list[str], Field(min_length=1, max_length=1000)]) -> m.Count:
        """Delete the given keys (never a pattern, never a flush). Returns how many were removed."""
        return m.Count(count=await r.delete(*keys))

    @tool.write(destructive=True, idempotent=True, title="Set a key's expiry")
    async def expire(key: Key, seconds: Annotated[int, Field(gt=0)]) -> m.Written:
        """Make a key expire after `seconds`."""
        done = await r.expire(key, seconds)
        return m.Written(ok=bool(done), detail="" if done else "key does not exist")

    @tool.write(destructive=False, idempotent=True, title="Remove a key's expiry")
    async def persist(key: Key) -> m.Written:
        """Remove the expiry of a key."""
        done = await r.persist(key)
        return m.Written(ok=bool(done), detail="" if done else "key missing or has no expiry")

    @tool.write(destructive=True, idempotent=False, title="Rename a key")
    async def rename(key: Key, new_key: Key, overwrite: bool = False) -> m.Written:
        """Rename a key. Refuses to replace an existing `new_key` unless `overwrite` is true."""
        if overwrite:
            await r.rename(key, new_key)
            return m.Written(ok=True)
        done = await r.renamenx(key, new_key)
        return m.Written(ok=bool(done), detail="" if done else f"{new_key} already exists")

    # ------------------------------------------------------------------ hashes
    @tool.read("Get one hash field")
    async def hget(key: Key, field: str) -> m.FieldValue:
        """Read one field of a hash. A field larger than MCP_MAX_VALUE_BYTES is not read (value null, truncated)."""
        if await r.hstrlen(key, field) > vmax:  # a field cannot be read partially: do not load it at all
            return m.FieldValue(key=key, field=field, value=None, truncated=True)
        text, cut = value(await r.hget(key, field))
        return m.FieldValue(key=key, field=field, value=text, truncated=cut)

    @tool.read("Get a whole hash")
    async def hgetall(key: Key) -> m.HashValue:
        """Read the fields of a hash; at most MCP_MAX_ITEMS fields (HSCAN beyond that). A field bigger than
        MCP_MAX_VALUE_BYTES is not loaded at all: its value is null and the result is marked truncated."""
        length = await r.hlen(key)
        fields: dict[str, str | None] = {}
        truncated = False
        if length <= imax:
            # Small hash: size every field first (HSTRLEN) and fetch only those under the value cap.
            names = await r.hkeys(key)
            async with r.pipeline(transaction=False) as p:
                for name in names:
                    p.hstrlen(key, name)
                sizes = await p.execute()
            small = [n for n, size in zip(names, sizes) if size <= vmax]
            values = await r.hmget(key, small) if small else []
            fetched = dict(zip(small, values))
            for name in names:
                if name in fetched:
                    fields[_s(name)], cut = value(fetched[name])
                    truncated |= cut
                else:
                    fields[_s(name)], truncated = None, True  # too big to read: null and marked
        else:
            want = await _affordable(key, length)
            raw: dict = {}
            cursor = 0
            for _ in range(SCAN_ROUNDS):
                cursor, batch = await r.hscan(key, cursor=cursor, count=want)
                raw.update(batch)
                if cursor == 0 or len(raw) >= want:
                    break
            truncated = True
            for f, v in list(raw.items())[:want]:
                fields[_s(f)], _ = value(v)
        return m.HashValue(key=key, fields=fields, length=length, truncated=truncated)

    @tool.read("Number of hash fields")
    async def hlen(key: Key) -> m.Count:
        """How many fields a hash has."""
        return m.Count(key=key, count=await r.hlen(key))

    @tool.write(destructive=True, idempotent=True, title="Set hash fields")
    async def hset(key: Key, fields: Annotated[dict[str, str], Field(min_length=1)]) -> m.Count:
        """Set one or more fields of a hash. Returns how many fields were new."""
        return m.Count(key=key, count=await r.hset(key, mapping=fields))

    @tool.write(destructive=True, idempotent=True, title="Delete hash fields")
    async def hdel(key: Key, fields: Annotated[list[str], Field(min_length=1)]) -> m.Count:
        """Delete fields of a hash. Returns how many were removed."""
        return m.Count(key=key, count=await r.hdel(key, *fields))

    # ------------------------------------------------------------------- lists
    @tool.read("Read a range of a list")
    async def lrange(key: Key, start: int = 0, stop: int = -1) -> m.ListValue:
        """Read list elements start..stop (inclusive, negative counts from the end), at most MCP_MAX_ITEMS."""
        length = await r.llen(key)
        want = await _affordable(key, length)
        first = start if start >= 0 else max(length + start, 0)
        last = stop if stop >= 0 else length + stop
        last_capped = min(last, first + want - 1)
        raw = await r.lrange(key, first, last_capped) if last_capped >= first else []
        items, truncated = [], last > last_capped
        for v in raw:
            text, cut = value(v)
            items.append(text)
            truncated |= cut
        return m.ListValue(key=key, items=items, length=length, truncated=truncated)

    @tool.read("Length of a list")
    async def llen(key: Key) -> m.Count:
        """How many elements a list has."""
        return m.Count(key=key, count=await r.llen(key))

    @tool.write(destructive=False, idempotent=False, title="Push to the head of a list")
    async def lpush(key: Key, values: Annotated[list[str], Field(min_length=1)]) -> m.Count:
        """Prepend values to a list. Returns the new length."""
        return m.Count(key=key, count=await r.lpush(key, *values))

    @tool.write(destructive=False, idempotent=False, title="Push to the tail of a list")
    async def rpush(key: Key, values: Annotated[list[str], Field(min_length=1)]) -> m.Count:
        """Append values to a list. Returns the new length."""
        return m.Count(key=key, count=await r.rpush(key, *values))

    @tool.write(destructive=True, idempotent=False, title="Pop from the head of a list")
    async def lpop(key: Key, count: Annotated[int, Field(ge=1)] = 1) -> m.Popped:
        """Remove and return up to `count` elements from the head of a list."""
        raw = await r.lpop(key, min(count, await _affordable(key, await r.llen(key)) or 1)) or []
        return m.Popped(key=key, items=[value(v)[0] for v in raw])

    @tool.write(destructive=True, idempotent=False, title="Pop from the tail of a list")
    async def rpop(key: Key, count: Annotated[int, Field(ge=1)] = 1) -> m.Popped:
        """Remove and return up to `count` elements from the tail of a list."""
        raw = await r.rpop(key, min(count, await _affordable(key, await r.llen(key)) or 1)) or []
        return m.Popped(key=key, items=[value(v)[0] for v in raw])

    # -------------------------------------------------------------------- sets
    @tool.read("Members of a set")
    async def smembers(key: Key) -> m.ListValue:
        """Members of a set, at most MCP_MAX_ITEMS (SSCAN, so a big set is never loaded whole)."""
        length = await r.scard(key)
        want = await _affordable(key, length)
        found: list = []
        cursor = 0
        for _ in range(SCAN_ROUNDS if want else 0):
            cursor, batch = await r.sscan(key, cursor=cursor, count=want)
            found.extend(batch)
            if cursor == 0 or len(found) >= want:
                break
        items, truncated = [], length > want
        for v in found[:want]:
            text, cut = value(v)
            items.append(text)
            truncated |= cut
        return m.ListValue(key=key, items=items, length=length, truncated=truncated)

    @tool.read("Is a member of a set")
    async def sismember(key: Key, member: str) -> m.Membership:
        """Whether `member` is in the set."""
        return m.Membership(key=key, member=member, is_member=bool(await r.sismember(key, member)))

    @tool.read("Size of a set")
    async def scard(key: Key) -> m.Count:
        """How many members a set has."""
        return m.Count(key=key, count=await r.scard(key))

    @tool.write(destructive=False, idempotent=True, title="Add set members")
    async def sadd(key: Key, members: Annotated[list[str], Field(min_length=1)]) -> m.Count:
        """Add members to a set. Returns how many were new."""
        return m.Count(key=key, count=await r.sadd(key, *members))

    @tool.write(destructive=True, idempotent=True, title="Remove set members")
    async def srem(key: Key, members: Annotated[list[str], Field(min_length=1)]) -> m.Count:
        """Remove members from a set. Returns how many were removed."""
        return m.Count(key=key, count=await r.srem(key, *members))

    # ------------------------------------------------------------- sorted sets
    @tool.read("Range of a sorted set")
    async def zrange(key: Key, start: int = 0, stop: int = -1, reverse: bool = False) -> m.SortedSetValue:
        """Members with scores by rank start..stop (inclusive), lowest first unless `reverse`; at most MCP_MAX_ITEMS."""
        length = await r.zcard(key)
        want = await _affordable(key, length)
        first = start if start >= 0 else max(length + start, 0)
        last = stop if stop >= 0 else length + stop
        last_capped = min(last, first + want - 1)
        raw = await r.zrange(key, first, last_capped, desc=reverse, withscores=True) if last_capped >= first else []
        members = [m.ScoredMember(member=value(v)[0] or "", score=s) for v, s in raw]
        return m.SortedSetValue(key=key, members=members, length=length, truncated=last > last_capped)

    @tool.read("Score of a sorted-set member")
    async def zscore(key: Key, member: str) -> m.Score:
        """The score of `member`, null when absent."""
        return m.Score(key=key, member=member, score=await r.zscore(key, member))

    @tool.read("Size of a sorted set")
    async def zcard(key: Key) -> m.Count:
        """How many members a sorted set has."""
        return m.Count(key=key, count=await r.zcard(key))

    @tool.write(destructive=False, idempotent=True, title="Add sorted-set members")
    async def zadd(key: Key, members: Annotated[dict[str, float], Field(min_length=1)]) -> m.Count:
        """Add or update members with their scores ({member: score}). Returns how many were new."""
        return m.Count(key=key, count=await r.zadd(key, members))

    @tool.write(destructive=True, idempotent=True, title="Remove sorted-set members")
    async def zrem(key: Key, members: Annotated[list[str], Field(min_length=1)]) -> m.Count:
        """Remove members from a sorted set. Returns how many were removed."""
        return m.Count(key=key, count=await r.zrem(key, *members))

    # ----------------------------------------------------------------- streams
    def _entries(raw: list) -> list[m.StreamEntry]:
        return [m.StreamEntry(id=_s(i), fields={_s(f): value(v)[0] or "" for f, v in (fields or {}).items()})
                for i, fields in raw]

    @tool.read("Read a range of a stream")
    async def xrange(key: Key, start: str = "-", end: str = "+",
                     count: Annotated[int, Field(ge=1)] = 10, reverse: bool = False) -> m.StreamEntries:
        """Stream entries between two ids (`-`/`+` for the ends), at most `count` (capped by MCP_MAX_ITEMS)."""
        n = min(count, await _affordable(key, await r.xlen(key)) or 1)
        if reverse:
            raw = await r.xrevrange(key, max=end, min=start, count=n + 1)
        else:
            raw = await r.xrange(key, min=start, max=end, count=n + 1)
        return m.StreamEntries(key=key, entries=_entries(raw[:n]), truncated=len(raw) > n)

    @tool.read("Length of a stream")
    async def xlen(key: Key) -> m.Count:
        """How many entries a stream has."""
        return m.Count(key=key, count=await r.xlen(key))

    @tool.read("Consumer groups of a stream")
    async def xinfo_groups(key: Key) -> m.StreamGroups:
        """The consumer groups of a stream with their pending counts."""
        raw = await r.xinfo_groups(key)
        groups = [m.StreamGroup(name=_s(g["name"]), consumers=g["consumers"], pending=g["pending"],
                                last_delivered_id=_s(g["last-delivered-id"])) for g in raw[:imax]]
        return m.StreamGroups(key=key, groups=groups)

    @tool.write(destructive=False, idempotent=False, title="Append to a stream")
    async def xadd(key: Key, fields: Annotated[dict[str, str], Field(min_length=1)],
                   maxlen: Annotated[int | None, Field(gt=0)] = None) -> m.EntryId:
        """Append an entry; optional approximate `maxlen` trims old entries."""
        entry_id = await r.xadd(key, fields, maxlen=maxlen, approximate=True)
        return m.EntryId(key=key, id=_s(entry_id))

    @tool.write(destructive=False, idempotent=False, title="Create a consumer group")
    async def xgroup_create(key: Key, group: str, start_id: str = "$", create_stream: bool = False) -> m.Written:
        """Create a consumer group reading from `start_id` (`$` = new entries only, `0` = from the start)."""
        await r.xgroup_create(key, group, id=start_id, mkstream=create_stream)
        return m.Written(ok=True)

    @tool.write(destructive=False, idempotent=False, title="Read as a consumer group member")
    async def xreadgroup(key: Key, group: str, consumer: str,
                         count: Annotated[int, Field(ge=1)] = 10, pending_only: bool = False) -> m.StreamEntries:
        """Read entries for `consumer` in `group` (never blocks). New entries by default; `pending_only`
        re-reads this consumer's unacknowledged ones. Changes the group's state, hence a write tool."""
        n = min(count, imax)
        raw = await r.xreadgroup(group, consumer, {key: "0" if pending_only else ">"}, count=n)
        entries = _entries(raw[0][1]) if raw else []
        return m.StreamEntries(key=key, entries=entries)

    # ----------------------------------------------------------------- pub/sub
    @tool.write(destructive=False, idempotent=False, title="Publish a message")
    async def publish(channel: str, message: str) -> m.Published:
        """Publish a message on a channel. Returns how many subscribers received it."""
        return m.Published(channel=channel, receivers=await r.publish(channel, message))

    @tool.read("Active pub/sub channels")
    async def pubsub_channels(pattern: str = "*") -> m.Channels:
        """Channels with at least one subscriber, matching a glob pattern."""
        names, cut = capping.items(sorted(_s(c) for c in await r.pubsub_channels(pattern)), imax)
        return m.Channels(channels=names, truncated=cut)

    # ------------------------------------------------------------------ server
    @tool.read("Server information")
    async def info(section: str = "default") -> m.Info:
        """INFO for one section (server, clients, memory, persistence, stats, replication, cpu,
        keyspace, …; `default` or `all`)."""
        raw = await r.info(section)
        data, cut = capping.deep(raw, limits)
        return m.Info(section=section, info=data, truncated=cut)

    @tool.read("Number of keys")
    async def dbsize() -> m.Count:
        """How many keys the selected database holds."""
        return m.Count(count=await r.dbsize())

    @tool.read("Memory used by a key")
    async def memory_usage(key: Key) -> m.MemoryUsage:
        """Bytes a key and its value take in Redis memory (MEMORY USAGE)."""
        return m.MemoryUsage(key=key, bytes=await r.memory_usage(key))

    @tool.read("Slow log")
    async def slowlog_get(count: Annotated[int, Field(ge=1)] = 10) -> m.Slowlog:
        """The most recent slow-log entries (commands slower than slowlog-log-slower-than)."""
        raw = await r.slowlog_get(min(count, imax))
        entries = []
        for e in raw:
            command = e.get("command", b"")
            text, _ = capping.text(command if isinstance(command, (bytes, str)) else " ".join(map(_s, command)), 1024)
            entries.append(m.SlowlogEntry(id=e["id"], start_time=e["start_time"], duration_us=e["duration"],
                                          command=text, client_address=_s(e.get("client_address", b""))))
        return m.Slowlog(entries=entries)

    # -------------------------------------------------------------------- JSON
    @tool.read("Get a JSON document")
    async def json_get(key: Key, path: str = "$") -> m.JsonValue:
        """Read a RedisJSON document or a JSONPath inside it (needs the RedisJSON module)."""
        size = await r.memory_usage(key)
        if size is None:
            return m.JsonValue(key=key, path=path, exists=False)
        if size > limits.max_result_bytes * 4 and path in ("$", "."):
            raise fail(f"{key} takes {size} bytes; read a narrower path than {path!r}")
        raw = await r.execute_command("JSON.GET", key, path)
        if raw is None:
            return m.JsonValue(key=key, path=path, exists=False)
        parsed, cut = capping.deep(json.loads(raw), limits)
        return m.JsonValue(key=key, path=path, value=parsed, exists=True, truncated=cut)

    @tool.write(destructive=True, idempotent=True, title="Set a JSON document")
    async def json_set(key: Key, value: Annotated[str, Field(description="JSON text")], path: str = "$") -> m.Written:
        """Set a RedisJSON document or a path inside it (needs the RedisJSON module)."""
        try:
            json.loads(value)
        except ValueError as exc:
            raise fail(f"value is not valid JSON: {exc}") from None
        done = await r.execute_command("JSON.SET", key, path, value)
        return m.Written(ok=bool(done))
