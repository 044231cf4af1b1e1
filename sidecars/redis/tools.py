"""The Redis tools, modelled on the official redis-mcp-server's set, minus anything that can flush a
database or change server configuration.

Bounded whatever the data:

* Every read asks Redis for a bounded slice (GETRANGE, LRANGE/ZRANGE by index, HSCAN/SSCAN/SCAN
  with COUNT, XRANGE COUNT), sized first from ``MEMORY USAGE key SAMPLES 0`` (exact, not sampled)
  so a small head cannot hide a big tail. The RESP reader (protocol.py) keeps only the head of any
  element larger than the sidecar can afford, so even an element nobody could size in advance
  (a 2 MB hash field name) is never held whole.
* Results are built element by element against ``MCP_MAX_RESULT_BYTES``, counting each element as
  it will be encoded (encoding.py); when the budget is spent the tool stops reading and says where
  to continue (``next_start``, ``cursor``, ``next_start_id``).
* Keys, values, fields and members are binary-safe: UTF-8 text as strings, other bytes as
  ``{"base64": ...}``, accepted back as input.
* One deadline per call, ``MCP_BACKEND_TIMEOUT``. Reads retry once on a broken connection; writes
  never retry (a timed-out ``RPUSH`` may have run), and say so when their outcome is unknown.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Awaitable, Callable

from pydantic import Field

from sidecars.common import capping
from sidecars.common.app import Sidecar
from sidecars.common.tools import fail

from . import encoding as enc
from . import models as m
from .encoding import Bin, Budget, Key, cost, head, raw
from .protocol import CutBytes

SCAN_ROUNDS = 50  # SCAN iterations per call: bounded work even on a huge keyspace
#: Bytes of Redis data one page may transfer, judged from the key's MEMORY USAGE.
READ_BUDGET = 8 * 1024 * 1024
#: Up to this many elements MEMORY USAGE counts every element (SAMPLES 0, O(N) in Redis); beyond,
#: Redis's sampled estimate is used and the RESP reader's cap is what bounds memory.
EXACT_SIZE_MAX_ELEMENTS = 100_000
PAGE_ROUNDS = 8  # LRANGE/ZRANGE pages per call: small pages when the key's average element is big
MGET_BATCH = 16  # GETRANGEs per pipeline (fewer when 16 x MCP_MAX_VALUE_BYTES would exceed READ_BUDGET)
#: Bytes one cut element may cost in the response at worst, per byte of head (\\u escapes twice).
WORST_PER_BYTE = 13


def _s(value: Any) -> str:
    """Redis bytes → text for short metadata (group names, stream ids, INFO), never data."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def register(sidecar: Sidecar) -> None:
    r = sidecar.backend.client
    limits = sidecar.settings.limits
    registry = sidecar.registry
    vmax, imax = limits.max_value_bytes, limits.max_items

    read, write = registry.read, registry.write  # one deadline per call, one retry for reads (backend.bounded)

    # ------------------------------------------------------------- elements
    def element(b: Any, budget: Budget, first: bool) -> tuple[enc.Element, bool] | None:
        """``b`` as it appears in the result, reserved in ``budget``; None when it does not fit.
        The first element of a result is cut further to fit, so every call makes progress."""
        if not isinstance(b, bytes):
            b = str(b).encode()
        length = b.length if isinstance(b, CutBytes) else None
        if enc.MIN_PER_BYTE * min(len(b), vmax) + enc.ELEMENT_OVERHEAD <= budget.left:  # else: cannot fit
            el, cut = head(b, vmax, length)
            if budget.take(cost(el)):
                return el, cut
        if not first:
            budget.spent = True
            return None
        room = max(0, (budget.left - 512) // WORST_PER_BYTE)
        el, _ = head(b[:room], room, length if length is not None else len(b))
        el = el if isinstance(el, enc.Cut) else enc.Cut(length=len(b), text=el if isinstance(el, str) else None,
                                                          base64=el.base64 if isinstance(el, enc.Encoded) else None)
        budget.take(cost(el))
        return el, True

    def echo(value: str | enc.Encoded, budget: Budget) -> str | enc.Encoded:
        """An input echoed in the result (a key): counted, never cut (the request already carried it)."""
        budget.take(cost(value))
        return value

    async def _sizer(key: bytes, length: int) -> Callable[[Budget], int]:
        """How many elements of an aggregate to ask Redis for at once, given what is left of the budget.
        MEMORY USAGE counts every element (SAMPLES 0) up to EXACT_SIZE_MAX_ELEMENTS: a sampled estimate
        would not see a big tail behind a small head."""
        if length == 0:
            return lambda budget: 0
        samples = 0 if length <= EXACT_SIZE_MAX_ELEMENTS else None
        usage = await r.memory_usage(key, samples=samples) or 0
        average = max(1.0, usage / length)
        per_element = min(average, vmax) * 3 + enc.ELEMENT_OVERHEAD
        return lambda budget: int(max(1, min(imax, READ_BUDGET // average, max(budget.left, 1) // per_element)))

    async def _page(key: bytes, length: int, budget: Budget) -> int:
        return (await _sizer(key, length))(budget)

    def _range(start: int, stop: int, length: int) -> tuple[int, int]:
        first = start if start >= 0 else max(length + start, 0)
        last = min(stop if stop >= 0 else length + stop, length - 1)
        return first, last

    async def _ranked(k: bytes, length: int, start: int, stop: int, budget: Budget,
                      fetch: Callable[[int, int], Awaitable[list[tuple[Any, Any]]]],
                      make: Callable[[enc.Element, Any], Any]) -> tuple[list[Any], bool, int | None]:
        """Elements start..stop of a list or sorted set (by index/rank), in pages sized to the budget:
        ``fetch(a, b)`` reads indices a..b as (value, extra) pairs, ``make(element, extra)`` builds an
        item. Returns (items, truncated, next_start)."""
        first, last = _range(start, stop, length)
        items: list[Any] = []
        truncated = False
        pos = first
        page = await _sizer(k, length) if last >= first else None
        for _ in range(PAGE_ROUNDS if last >= first else 0):
            want = min(page(budget), imax - len(items))
            got = await fetch(pos, min(last, pos + want - 1))
            for value, extra in got:
                el = element(value, budget, first=not items)
                if el is None:
                    break
                items.append(make(el[0], extra))
                truncated |= el[1]
            pos = first + len(items)
            if budget.spent or len(items) >= imax or pos > last or len(got) < want:
                break
        next_start = pos if last >= first and pos <= last else None
        return items, truncated or next_start is not None, next_start

    # ----------------------------------------------------------------- strings
    async def _string(key: str | enc.Encoded, budget: Budget, first: bool, head_bytes: Any = None,
                      fetched: bool = False) -> m.StringValue | None:
        k = raw(key)
        if not fetched:
            # One GETRANGE answers the common case (a value that fits) in a single round trip; only a
            # value that fills the window needs STRLEN, and only an empty answer needs EXISTS.
            head_bytes = await r.getrange(k, 0, vmax)
        key_cost = cost(key) + 160  # the key echoed and the fixed fields
        if not budget.take(key_cost) and not first:
            return None
        if isinstance(head_bytes, Exception):  # not a string (WRONGTYPE): present, but no string value
            return m.StringValue(key=key, exists=True, value=None, length=0)
        if not head_bytes:
            exists = bool(await r.exists(k))
            return m.StringValue(key=key, exists=exists, value="" if exists else None, length=0)
        length = len(head_bytes) if len(head_bytes) <= vmax else await r.strlen(k)
        got = element(head_bytes, budget, first)
        if got is None:
            budget.left += key_cost
            return None
        el, cut = got
        value: enc.Data = el
        if isinstance(el, enc.Cut):  # get keeps the head as its value; length and truncated say the rest
            value = el.text if el.text is not None else enc.Encoded(base64=el.base64 or "")
        return m.StringValue(key=key, exists=True, value=value, length=length, truncated=cut or length > vmax)

    @read("Get a string value")
    async def get(key: Key) -> m.StringValue:
        """Read a string key. Values longer than MCP_MAX_VALUE_BYTES are cut and marked truncated (`length`
        is the real size). Non-UTF-8 values come as {"base64": ...}."""
        result = await _string(key, Budget(limits.max_result_bytes), first=True)
        assert result is not None  # the first element always fits
        return result

    @read("Get several string values")
    async def mget(keys: Annotated[list[Key], Field(min_length=1)]) -> m.MultiValue:
        """Read several string keys at once (at most MCP_MAX_ITEMS keys, and as many as fit
        MCP_MAX_RESULT_BYTES: when truncated, `values` covers the first keys only)."""
        kept, truncated = capping.items(keys, imax)
        budget = Budget(limits.max_result_bytes)
        values: list[m.StringValue] = []
        per_batch = max(1, min(MGET_BATCH, READ_BUDGET // (vmax + 1)))  # replies in flight: <= READ_BUDGET
        for i in range(0, len(kept), per_batch):
            batch = kept[i:i + per_batch]
            async with r.pipeline(transaction=False) as p:
                for k in batch:
                    p.getrange(raw(k), 0, vmax)
                heads = await p.execute(raise_on_error=False)
            for k, h in zip(batch, heads):
                value = await _string(k, budget, first=not values, head_bytes=h, fetched=True)
                if value is None:
                    return m.MultiValue(values=values, truncated=True)
                values.append(value)
        return m.MultiValue(values=values, truncated=truncated)

    @write(destructive=True, idempotent=True, title="Set a string value")
    async def set(key: Key, value: Bin,
                  expire_seconds: Annotated[int | None, Field(gt=0)] = None,
                  only_if_absent: bool = False) -> m.Written:
        """Set a string key, optionally with an expiry in seconds and only if it does not exist yet (NX)."""
        done = await r.set(raw(key), raw(value), ex=expire_seconds, nx=only_if_absent)
        return m.Written(ok=bool(done), detail="" if done else "key exists (only_if_absent)")

    # -------------------------------------------------------------------- keys
    @read("Scan keys by pattern")
    async def scan_keys(pattern: str = "*", cursor: Annotated[int, Field(ge=0)] = 0,
                        limit: Annotated[int, Field(ge=1)] = 100,
                        type: str | None = None) -> m.KeyList:
        """Incrementally list keys matching a glob pattern (never KEYS). Returns at most `limit`
        (capped by MCP_MAX_ITEMS) keys and a cursor to continue; optional type filter (string, hash…).
        Keys that are not UTF-8 come as {"base64": ...}; pass them to other tools as they are."""
        want = min(limit, imax)
        budget = Budget(limits.max_result_bytes)
        found: list[enc.Element] = []
        count = want
        truncated = False
        for _ in range(SCAN_ROUNDS):
            next_cursor, batch = await r.scan(cursor=cursor, match=pattern, count=count, _type=type)
            if len(found) + len(batch) > want:
                if found:
                    break  # resume from this batch next time instead of dropping part of it
                if count > 1:
                    count = max(1, count // 4)  # COUNT is only a hint: ask the same cursor for less
                    continue
            saved = budget.left
            page = []
            for k in batch:
                got = element(k, budget, first=not found and not page)
                if got is None:
                    break
                page.append(got[0])
            if len(page) < len(batch):
                budget.left = saved if found or count > 1 else budget.left
                if found:  # resume from this batch next time
                    break
                if count > 1:
                    count = max(1, count // 4)  # ask the same cursor for less
                    continue
                truncated = True  # a single batch larger than the budget: its tail is cut and marked
            found.extend(page)
            cursor = next_cursor
            if cursor == 0 or len(found) >= want or truncated:
                break
        # Only a single oversized SCAN batch at COUNT 1 can exceed the cap; its tail is cut and marked.
        truncated |= cursor != 0 or len(found) > imax
        return m.KeyList(keys=found[:imax], cursor=int(cursor), truncated=truncated)

    @read("Type of a key")
    async def key_type(key: Key) -> m.KeyType:
        """The Redis type of a key (`none` when it does not exist)."""
        return m.KeyType(key=key, type=_s(await r.type(raw(key))))

    @read("Time to live of a key")
    async def ttl(key: Key) -> m.KeyTTL:
        """Seconds until the key expires; -1 without expiry, -2 when the key does not exist."""
        return m.KeyTTL(key=key, ttl_seconds=await r.ttl(raw(key)))

    @read("Count existing keys")
    async def exists(keys: Annotated[list[Key], Field(min_length=1, max_length=1000)]) -> m.Count:
        """How many of the given keys exist."""
        return m.Count(count=await r.exists(*map(raw, keys)))

    @write(destructive=True, idempotent=True, title="Delete keys")
    async def delete(keys: Annotated[list[Key], Field(min_length=1, max_length=1000)]) -> m.Count:
        """Delete the given keys (never a pattern, never a flush). Returns how many were removed."""
        return m.Count(count=await r.delete(*map(raw, keys)))

    @write(destructive=True, idempotent=True, title="Set a key's expiry")
    async def expire(key: Key, seconds: Annotated[int, Field(gt=0)]) -> m.Written:
        """Make a key expire after `seconds`."""
        done = await r.expire(raw(key), seconds)
        return m.Written(ok=bool(done), detail="" if done else "key does not exist")

    @write(destructive=False, idempotent=True, title="Remove a key's expiry")
    async def persist(key: Key) -> m.Written:
        """Remove the expiry of a key."""
        done = await r.persist(raw(key))
        return m.Written(ok=bool(done), detail="" if done else "key missing or has no expiry")

    @write(destructive=True, idempotent=False, title="Rename a key")
    async def rename(key: Key, new_key: Key, overwrite: bool = False) -> m.Written:
        """Rename a key. Refuses to replace an existing `new_key` unless `overwrite` is true."""
        if overwrite:
            await r.rename(raw(key), raw(new_key))
            return m.Written(ok=True)
        done = await r.renamenx(raw(key), raw(new_key))
        shown = new_key if isinstance(new_key, str) else f"base64:{new_key.base64}"
        return m.Written(ok=bool(done), detail="" if done else f"{capping.text(shown, 256)[0]} already exists")

    # ------------------------------------------------------------------ hashes
    @read("Get one hash field")
    async def hget(key: Key, field: Bin) -> m.FieldValue:
        """Read one field of a hash. A value larger than MCP_MAX_VALUE_BYTES is not read: value null,
        `length` its size, truncated true."""
        k, f = raw(key), raw(field)
        size = await r.hstrlen(k, f)
        if size > vmax:  # a field cannot be read partially: do not load it at all
            return m.FieldValue(key=key, field=field, value=None, length=size, truncated=True)
        got = await r.hget(k, f)
        return m.FieldValue(key=key, field=field, value=None if got is None else enc.data(got), length=size)

    async def _scan_pages(command: str, key: bytes, cursor: int, budget: Budget, pairs: bool,
                          ) -> tuple[list[tuple[Any, ...]], int, bool]:
        """HSCAN/SSCAN from ``cursor`` until MCP_MAX_ITEMS entries or the budget are used up.
        Returns (entries as elements, cursor to continue from, truncated)."""
        length = await (r.hlen(key) if pairs else r.scard(key))
        count = await _page(key, length, budget)
        out: list[tuple[Any, ...]] = []
        if count == 0:
            return out, 0, False
        for _ in range(SCAN_ROUNDS):
            next_cursor, flat = await r.execute_command(command, key, cursor, "COUNT", count)
            next_cursor = int(next_cursor)
            if isinstance(flat, dict):  # redis-py's HSCAN reply callback
                entries = list(flat.items())
            else:
                step = 2 if pairs else 1
                entries = [tuple(flat[i:i + step]) for i in range(0, len(flat), step)]
            saved, page = budget.left, []
            for entry in entries:
                if len(out) + len(page) >= imax:
                    break
                els = []
                for part in entry:
                    got = element(part, budget, first=not out and not page and not els)
                    if got is None:
                        break
                    els.append(got[0])
                if len(els) < len(entry):
                    break
                page.append(tuple(els))
            if len(page) < len(entries):  # this batch does not fit whole
                budget.left = saved
                if out:
                    return out, cursor, True  # resume from this batch next time (SCAN may repeat entries)
                if count > 1:
                    count = 1  # COUNT is only a hint: ask the same cursor for less
                    continue
                # One batch (a small hash or set comes whole) larger than one answer holds: what fits,
                # and truncated. The rest of this batch cannot be paged to (use hget/sismember).
                for entry in entries[:imax]:
                    els = [element(part, budget, first=not out) for part in entry]
                    if any(e is None for e in els):
                        break
                    out.append(tuple(e[0] for e in els))
                return out, next_cursor, True
            out.extend(page)
            cursor = next_cursor
            if cursor == 0 or len(out) >= imax:
                break
        return out, cursor, cursor != 0

    @read("Get a whole hash")
    async def hgetall(key: Key, cursor: Annotated[int, Field(ge=0)] = 0) -> m.HashValue:
        """Read the fields of a hash with HSCAN: at most MCP_MAX_ITEMS fields and MCP_MAX_RESULT_BYTES per
        call; when truncated, pass the returned `cursor` back for more. A value longer than
        MCP_MAX_VALUE_BYTES comes as {"length", "truncated", "text"|"base64": first bytes}. Fields whose
        names are not UTF-8 text (or are cut) are listed in `binary_fields`."""
        budget = Budget(limits.max_result_bytes)
        shown = echo(key, budget)
        k = raw(key)
        length = await r.hlen(k)
        entries, next_cursor, truncated = await _scan_pages("HSCAN", k, cursor, budget, pairs=True)
        fields: dict[str, enc.Element] = {}
        binary: list[m.FieldPair] = []
        for name, value in entries:
            if isinstance(name, str):
                fields[name] = value
            else:
                binary.append(m.FieldPair(field=name, value=value))
            truncated |= isinstance(value, enc.Cut) or isinstance(name, enc.Cut)
        return m.HashValue(key=shown, fields=fields, binary_fields=binary, length=length, truncated=truncated,
                           cursor=next_cursor)

    @read("Number of hash fields")
    async def hlen(key: Key) -> m.Count:
        """How many fields a hash has."""
        return m.Count(key=key, count=await r.hlen(raw(key)))

    @write(destructive=True, idempotent=True, title="Set hash fields")
    async def hset(key: Key, fields: Annotated[dict[str, Bin], Field(min_length=1)]) -> m.Count:
        """Set one or more fields of a hash ({field: value}). Returns how many fields were new."""
        return m.Count(key=key, count=await r.hset(raw(key), mapping={f: raw(v) for f, v in fields.items()}))

    @write(destructive=True, idempotent=True, title="Delete hash fields")
    async def hdel(key: Key, fields: Annotated[list[Bin], Field(min_length=1)]) -> m.Count:
        """Delete fields of a hash. Returns how many were removed."""
        return m.Count(key=key, count=await r.hdel(raw(key), *map(raw, fields)))

    # ------------------------------------------------------------------- lists
    @read("Read a range of a list")
    async def lrange(key: Key, start: int = 0, stop: int = -1) -> m.ListValue:
        """Read list elements start..stop (inclusive, negative counts from the end): at most MCP_MAX_ITEMS
        and MCP_MAX_RESULT_BYTES per call; when truncated, `next_start` is where to continue. An element
        longer than MCP_MAX_VALUE_BYTES comes as {"length", "truncated", "text"|"base64": first bytes}."""
        budget = Budget(limits.max_result_bytes)
        shown = echo(key, budget)
        k = raw(key)
        length = await r.llen(k)

        async def fetch(a: int, b: int) -> list[tuple[Any, None]]:
            return [(v, None) for v in await r.lrange(k, a, b)]

        items, truncated, next_start = await _ranked(k, length, start, stop, budget, fetch, lambda el, _: el)
        return m.ListValue(key=shown, items=items, length=length, truncated=truncated, next_start=next_start)

    @read("Length of a list")
    async def llen(key: Key) -> m.Count:
        """How many elements a list has."""
        return m.Count(key=key, count=await r.llen(raw(key)))

    @write(destructive=False, idempotent=False, title="Push to the head of a list")
    async def lpush(key: Key, values: Annotated[list[Bin], Field(min_length=1)]) -> m.Count:
        """Prepend values to a list. Returns the new length."""
        return m.Count(key=key, count=await r.lpush(raw(key), *map(raw, values)))

    @write(destructive=False, idempotent=False, title="Push to the tail of a list")
    async def rpush(key: Key, values: Annotated[list[Bin], Field(min_length=1)]) -> m.Count:
        """Append values to a list. Returns the new length."""
        return m.Count(key=key, count=await r.rpush(raw(key), *map(raw, values)))

    async def _pop(key: str | enc.Encoded, count: int, left: bool) -> m.Popped:
        """A pop removes what it returns: pop only as many as the answer can surely hold."""
        budget = Budget(limits.max_result_bytes)
        shown = echo(key, budget)
        k = raw(key)
        length = await r.llen(k)
        if length == 0:
            return m.Popped(key=shown, items=[])
        usage = await r.memory_usage(k, samples=0 if length <= EXACT_SIZE_MAX_ELEMENTS else None) or 0
        worst = min(vmax, usage) * WORST_PER_BYTE + enc.ELEMENT_OVERHEAD + 200
        n = max(1, min(count, imax, budget.left // worst))
        got = await (r.lpop(k, n) if left else r.rpop(k, n)) or []
        items = []
        for v in got:
            el = element(v, budget, first=not items)
            items.append(el[0] if el is not None else head(b"", 0, len(v))[0])
        return m.Popped(key=shown, items=items)

    @write(destructive=True, idempotent=False, title="Pop from the head of a list")
    async def lpop(key: Key, count: Annotated[int, Field(ge=1)] = 1) -> m.Popped:
        """Remove and return up to `count` elements from the head of a list (fewer when they would not fit
        one answer)."""
        return await _pop(key, count, left=True)

    @write(destructive=True, idempotent=False, title="Pop from the tail of a list")
    async def rpop(key: Key, count: Annotated[int, Field(ge=1)] = 1) -> m.Popped:
        """Remove and return up to `count` elements from the tail of a list (fewer when they would not fit
        one answer)."""
        return await _pop(key, count, left=False)

    # -------------------------------------------------------------------- sets
    @read("Members of a set")
    async def smembers(key: Key, cursor: Annotated[int, Field(ge=0)] = 0) -> m.ListValue:
        """Members of a set with SSCAN (never loaded whole): at most MCP_MAX_ITEMS and MCP_MAX_RESULT_BYTES
        per call; when truncated, pass the returned `cursor` back for more."""
        budget = Budget(limits.max_result_bytes)
        shown = echo(key, budget)
        k = raw(key)
        length = await r.scard(k)
        entries, next_cursor, truncated = await _scan_pages("SSCAN", k, cursor, budget, pairs=False)
        items = [e[0] for e in entries]
        truncated |= any(isinstance(i, enc.Cut) for i in items)
        return m.ListValue(key=shown, items=items, length=length, truncated=truncated, cursor=next_cursor)

    @read("Is a member of a set")
    async def sismember(key: Key, member: Bin) -> m.Membership:
        """Whether `member` is in the set."""
        return m.Membership(key=key, member=member, is_member=bool(await r.sismember(raw(key), raw(member))))

    @read("Size of a set")
    async def scard(key: Key) -> m.Count:
        """How many members a set has."""
        return m.Count(key=key, count=await r.scard(raw(key)))

    @write(destructive=False, idempotent=True, title="Add set members")
    async def sadd(key: Key, members: Annotated[list[Bin], Field(min_length=1)]) -> m.Count:
        """Add members to a set. Returns how many were new."""
        return m.Count(key=key, count=await r.sadd(raw(key), *map(raw, members)))

    @write(destructive=True, idempotent=True, title="Remove set members")
    async def srem(key: Key, members: Annotated[list[Bin], Field(min_length=1)]) -> m.Count:
        """Remove members from a set. Returns how many were removed."""
        return m.Count(key=key, count=await r.srem(raw(key), *map(raw, members)))

    # ------------------------------------------------------------- sorted sets
    @read("Range of a sorted set")
    async def zrange(key: Key, start: int = 0, stop: int = -1, reverse: bool = False) -> m.SortedSetValue:
        """Members with scores by rank start..stop (inclusive), lowest first unless `reverse`: at most
        MCP_MAX_ITEMS and MCP_MAX_RESULT_BYTES per call; when truncated, `next_start` is where to continue."""
        budget = Budget(limits.max_result_bytes)
        shown = echo(key, budget)
        k = raw(key)
        length = await r.zcard(k)

        async def fetch(a: int, b: int) -> list[tuple[Any, float]]:
            return await r.zrange(k, a, b, desc=reverse, withscores=True)

        members, truncated, next_start = await _ranked(
            k, length, start, stop, budget, fetch, lambda el, score: m.ScoredMember(member=el, score=score))
        return m.SortedSetValue(key=shown, members=members, length=length, truncated=truncated,
                                next_start=next_start)

    @read("Score of a sorted-set member")
    async def zscore(key: Key, member: Bin) -> m.Score:
        """The score of `member`, null when absent."""
        return m.Score(key=key, member=member, score=await r.zscore(raw(key), raw(member)))

    @read("Size of a sorted set")
    async def zcard(key: Key) -> m.Count:
        """How many members a sorted set has."""
        return m.Count(key=key, count=await r.zcard(raw(key)))

    @write(destructive=False, idempotent=True, title="Add sorted-set members")
    async def zadd(key: Key, members: Annotated[dict[str, float], Field(min_length=1)]) -> m.Count:
        """Add or update members with their scores ({member: score}). Returns how many were new."""
        return m.Count(key=key, count=await r.zadd(raw(key), members))

    @write(destructive=True, idempotent=True, title="Remove sorted-set members")
    async def zrem(key: Key, members: Annotated[list[Bin], Field(min_length=1)]) -> m.Count:
        """Remove members from a sorted set. Returns how many were removed."""
        return m.Count(key=key, count=await r.zrem(raw(key), *map(raw, members)))

    # ----------------------------------------------------------------- streams
    def _entries(raw_entries: list, budget: Budget) -> tuple[list[m.StreamEntry], bool]:
        """Stream entries as elements until the budget is spent. Returns (entries, all fitted)."""
        out: list[m.StreamEntry] = []
        for entry_id, flat in raw_entries:
            saved = budget.left
            fields: dict[str, enc.Element] = {}
            binary: list[m.FieldPair] = []
            budget.take(64)
            ok = True
            pairs = flat.items() if isinstance(flat, dict) else zip((flat or [])[::2], (flat or [])[1::2])
            for f, v in pairs:
                name = element(f, budget, first=not out and not fields and not binary)
                value = element(v, budget, first=not out and not fields and not binary) if name else None
                if name is None or value is None:
                    ok = False
                    break
                if isinstance(name[0], str):
                    fields[name[0]] = value[0]
                else:
                    binary.append(m.FieldPair(field=name[0], value=value[0]))
            if not ok and out:
                budget.left = saved
                return out, False
            out.append(m.StreamEntry(id=_s(entry_id), fields=fields, binary_fields=binary))
            if not ok:
                return out, False
        return out, True

    @read("Read a range of a stream")
    async def xrange(key: Key, start: str = "-", end: str = "+",
                     count: Annotated[int, Field(ge=1)] = 10, reverse: bool = False) -> m.StreamEntries:
        """Stream entries between two ids (`-`/`+` for the ends; `(id` excludes id), at most `count` (capped by
        MCP_MAX_ITEMS and MCP_MAX_RESULT_BYTES); when truncated, `next_start_id` is where to continue."""
        budget = Budget(limits.max_result_bytes)
        shown = echo(key, budget)
        k = raw(key)
        n = min(count, await _page(k, await r.xlen(k), budget) or 1)
        command = "XREVRANGE" if reverse else "XRANGE"
        bounds = (end, start) if reverse else (start, end)
        got = await r.execute_command(command, k, *bounds, "COUNT", n + 1)
        entries, fitted = _entries(got[:n], budget)
        more = len(got) > len(entries)
        next_id = f"({entries[-1].id}" if more and entries else None
        return m.StreamEntries(key=shown, entries=entries,
                               truncated=more or any(isinstance(v, enc.Cut) for e in entries for v in e.fields.values()),
                               next_start_id=next_id)

    @read("Length of a stream")
    async def xlen(key: Key) -> m.Count:
        """How many entries a stream has."""
        return m.Count(key=key, count=await r.xlen(raw(key)))

    @read("Consumer groups of a stream")
    async def xinfo_groups(key: Key) -> m.StreamGroups:
        """The consumer groups of a stream with their pending counts."""
        got = await r.xinfo_groups(raw(key))
        groups = [m.StreamGroup(name=capping.text(_s(g["name"]), 1024)[0], consumers=g["consumers"],
                                pending=g["pending"], last_delivered_id=_s(g["last-delivered-id"])) for g in got[:imax]]
        return m.StreamGroups(key=key, groups=groups)

    @write(destructive=False, idempotent=False, title="Append to a stream")
    async def xadd(key: Key, fields: Annotated[dict[str, Bin], Field(min_length=1)],
                   maxlen: Annotated[int | None, Field(gt=0)] = None) -> m.EntryId:
        """Append an entry ({field: value}); optional approximate `maxlen` trims old entries."""
        entry_id = await r.xadd(raw(key), {f: raw(v) for f, v in fields.items()}, maxlen=maxlen, approximate=True)
        return m.EntryId(key=key, id=_s(entry_id))

    @write(destructive=False, idempotent=False, title="Create a consumer group")
    async def xgroup_create(key: Key, group: str, start_id: str = "$", create_stream: bool = False) -> m.Written:
        """Create a consumer group reading from `start_id` (`$` = new entries only, `0` = from the start)."""
        await r.xgroup_create(raw(key), group, id=start_id, mkstream=create_stream)
        return m.Written(ok=True)

    @write(destructive=False, idempotent=False, title="Read as a consumer group member")
    async def xreadgroup(key: Key, group: str, consumer: str,
                         count: Annotated[int, Field(ge=1)] = 10, pending_only: bool = False) -> m.StreamEntries:
        """Read entries for `consumer` in `group` (never blocks). New entries by default; `pending_only`
        re-reads this consumer's unacknowledged ones. Changes the group's state, hence a write tool. Entries
        delivered but not shown (truncated) stay pending: read them with `pending_only`."""
        budget = Budget(limits.max_result_bytes)
        shown = echo(key, budget)
        k = raw(key)
        n = min(count, await _page(k, await r.xlen(k), budget) or 1)
        got = await r.xreadgroup(group, consumer, {k: "0" if pending_only else ">"}, count=n)
        entries, fitted = _entries(got[0][1], budget) if got else ([], True)
        return m.StreamEntries(key=shown, entries=entries, truncated=not fitted)

    # ----------------------------------------------------------------- pub/sub
    @write(destructive=False, idempotent=False, title="Publish a message")
    async def publish(channel: Bin, message: Bin) -> m.Published:
        """Publish a message on a channel. Returns how many subscribers received it."""
        return m.Published(channel=channel, receivers=await r.publish(raw(channel), raw(message)))

    @read("Active pub/sub channels")
    async def pubsub_channels(pattern: str = "*") -> m.Channels:
        """Channels with at least one subscriber, matching a glob pattern."""
        budget = Budget(limits.max_result_bytes)
        names: list[enc.Element] = []
        got = sorted(await r.pubsub_channels(pattern))
        for c in got[:imax]:
            el = element(c, budget, first=not names)
            if el is None:
                break
            names.append(el[0])
        return m.Channels(channels=names, truncated=len(names) < len(got))

    # ------------------------------------------------------------------ server
    @read("Server information")
    async def info(section: str = "default") -> m.Info:
        """INFO for one section (server, clients, memory, persistence, stats, replication, cpu,
        keyspace, …; `default` or `all`)."""
        got = await r.info(section)
        data, cut = capping.deep(got, limits)
        return m.Info(section=section, info=data, truncated=cut)

    @read("Number of keys")
    async def dbsize() -> m.Count:
        """How many keys the selected database holds."""
        return m.Count(count=await r.dbsize())

    @read("Memory used by a key")
    async def memory_usage(key: Key) -> m.MemoryUsage:
        """Bytes a key and its value take in Redis memory (MEMORY USAGE; Redis samples 5 elements of a
        collection, so this is an estimate for collections)."""
        return m.MemoryUsage(key=key, bytes=await r.memory_usage(raw(key)))

    @read("Slow log")
    async def slowlog_get(count: Annotated[int, Field(ge=1)] = 10) -> m.Slowlog:
        """The most recent slow-log entries (commands slower than slowlog-log-slower-than)."""
        got = await r.slowlog_get(min(count, imax))
        entries = []
        for e in got:
            command = e.get("command", b"")
            text, _ = capping.text(command if isinstance(command, (bytes, str)) else " ".join(map(_s, command)), 1024)
            entries.append(m.SlowlogEntry(id=e["id"], start_time=e["start_time"], duration_us=e["duration"],
                                          command=text, client_address=_s(e.get("client_address", b""))))
        return m.Slowlog(entries=entries)

    # -------------------------------------------------------------------- JSON
    @read("Get a JSON document")
    async def json_get(key: Key, path: str = "$") -> m.JsonValue:
        """Read a RedisJSON document or a JSONPath inside it (needs the RedisJSON module)."""
        k = raw(key)
        size = await r.memory_usage(k)
        if size is None:
            return m.JsonValue(key=key, path=path, exists=False)
        if size > limits.max_result_bytes * 4 and path in ("$", "."):
            raise fail(f"the key takes {size} bytes; read a narrower path than {capping.text(path, 256)[0]!r}")
        got = await r.execute_command("JSON.GET", k, path)
        if got is None:
            return m.JsonValue(key=key, path=path, exists=False)
        if isinstance(got, CutBytes):
            raise fail(f"the value at this path is {got.length} bytes of JSON; read a narrower path")
        parsed, cut = capping.deep(json.loads(got), limits)
        if 2 * len(json.dumps(parsed)) + enc.ENVELOPE > limits.max_result_bytes:
            raise fail("the value at this path does not fit MCP_MAX_RESULT_BYTES; read a narrower path")
        return m.JsonValue(key=key, path=path, value=parsed, exists=True, truncated=cut)

    @write(destructive=True, idempotent=True, title="Set a JSON document")
    async def json_set(key: Key, value: Annotated[str, Field(description="JSON text")], path: str = "$") -> m.Written:
        """Set a RedisJSON document or a path inside it (needs the RedisJSON module)."""
        try:
            json.loads(value)
        except ValueError as exc:
            raise fail(f"value is not valid JSON: {capping.text(str(exc), 256)[0]}") from None
        done = await r.execute_command("JSON.SET", raw(key), path, value)
        return m.Written(ok=bool(done))
