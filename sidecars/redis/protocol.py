"""A RESP reader that never holds a reply element larger than the sidecar can afford.

Tools ask Redis for bounded slices, and size what they can first (STRLEN, HSTRLEN, ``MEMORY USAGE
... SAMPLES 0``), but Redis cannot tell the size of one list element, set member or hash field name
before it is read. The length of every bulk string comes first on the wire (``$<length>\\r\\n``), so
this parser decides there (``_read``, which redis-py calls with that length before reading): an element longer than ``element_cap`` — or any element once the reply
has used up ``reply_cap`` bytes — is read through in 64 KiB chunks and only its head is kept, as a
:class:`CutBytes` that remembers the real length. The sidecar's memory per reply is therefore bounded
by ``reply_cap`` plus the elements' heads, whatever the data.

It extends redis-py's pure-Python RESP3 parser (RESP3 is redis-py 8's default protocol) (``redis`` is pinned in constraints.txt; a test checks
the hooks it relies on). Any failure while skipping closes the connection, as redis-py does for
every read error, so a half-read reply is never reused.
"""

from __future__ import annotations

from redis._parsers.resp3 import _AsyncRESP3Parser
from redis.exceptions import ConnectionError as RedisConnectionError

CHUNK = 64 * 1024


class CutBytes(bytes):
    """The first bytes of a longer Redis string; ``length`` is its real size."""

    length: int

    def __new__(cls, head: bytes, length: int) -> "CutBytes":
        obj = super().__new__(cls, head)
        obj.length = length
        return obj

    # Two cut elements with the same head are different elements (a dict of fields must keep both).
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other


def capped_parser(element_cap: int, reply_cap: int, head_cap: int | None = None) -> type:
    """A parser class (redis-py builds one per connection) with these caps in bytes; a skipped element
    keeps at most ``head_cap`` bytes (default ``element_cap``)."""
    head_cap = element_cap if head_cap is None else head_cap

    class CappedParser(_AsyncRESP3Parser):
        async def read_response(self, *args, **kwargs):
            self._reply_left = reply_cap
            return await super().read_response(*args, **kwargs)

        async def _read(self, length: int) -> bytes:
            # Every bulk payload ($ strings, = verbatim strings, ! errors) is read here, after its
            # announced length and before its bytes: the one place to decide.
            if length > element_cap or length > self._reply_left:
                return await self._skip(length)
            self._reply_left -= length
            return await super()._read(length)

        async def _skip(self, length: int) -> CutBytes:
            keep = max(0, min(head_cap, self._reply_left))
            want = length + 2  # the element and its \r\n
            have = self._buffer[self._pos:self._pos + want]
            # _pos is an offset in everything read for this reply; data read past the buffer here is
            # not kept in _chunks (redis-py's replay after an interrupted read): any error disconnects.
            self._pos += want
            head = bytearray(have[:keep])
            need = want - len(have)
            while need > 0:
                chunk = await self._stream.read(min(need, CHUNK))
                if not chunk:
                    raise RedisConnectionError("Connection closed by server while reading a reply")
                need -= len(chunk)
                if len(head) < keep:
                    head += chunk[:keep - len(head)]
            self._reply_left -= len(head)
            return CutBytes(bytes(head[:min(keep, length)]), length)

    return CappedParser
