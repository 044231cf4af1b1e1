"""An Elasticsearch HTTP node that never buffers an unbounded answer.

The stock node calls aiohttp's ``response.read()``, which keeps whatever the server sends, and the
client then parses all of it: a 120 MB ``top_hits`` answer took the sidecar to 547 MiB. Here the
body is read in chunks up to a byte cap (``Content-Length`` is checked first, so an honest big
answer costs nothing), and a body whose *parsed* size would blow the memory budget is refused too:
JSON like ``[{},{},...]`` grows ~24x as Python objects, so bytes alone are not a bound.

Answers read at the same time share one budget of in-flight bytes (``pool_cap``): 32 parallel
searches of ~1 MB each peaked at 136 MiB without it. A read that would pass it is refused as busy
(waiting while holding half an answer could deadlock the readers against each other).

The refusal is a ``RuntimeError`` subclass: the transport re-raises those untouched, so an oversized
answer is neither retried nor taken for a dead node.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
from elastic_transport import AiohttpHttpNode, HttpHeaders
from elastic_transport._node._http_aiohttp import _NEEDS_CLEANUP_CLOSED

# Python bytes per JSON structure, a little above CPython's (a small dict is ~180-230 bytes, a list
# 56 + 8 per item, a short str 50+): an upper estimate that costs three C-speed ``count`` passes.
_PER_OBJECT, _PER_ARRAY, _PER_ITEM = 160, 64, 32


class ResponseTooLarge(RuntimeError):
    """Elasticsearch (or OpenSearch) answered with more than the sidecar reads at once."""

    def __init__(self, limit: int, size: int | None = None, parsed: bool = False):
        self.limit, self.size, self.parsed = limit, size, parsed
        what = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
        if parsed:
            what = f"an answer that would take ~{size:,} bytes of memory (limit {limit:,})"
        super().__init__(
            f"the server sent {what}, more than this sidecar reads at once (set by MCP_MAX_RESULT_BYTES); "
            "ask for less: a smaller size or fewer buckets, `source` filtering, or a narrower index pattern")


class SidecarBusy(ResponseTooLarge):
    """Other answers being read at the same time already use the shared read budget."""

    def __init__(self, pool: int):
        RuntimeError.__init__(
            self, f"the sidecar is busy reading other large answers ({pool:,} bytes at once, set by "
            "MCP_MAX_RESULT_BYTES); try again, or ask for less")
        self.limit, self.size, self.parsed = pool, None, False


class _Pool:
    def __init__(self, cap: int):
        self.cap, self.used = cap, 0

    def take(self, n: int) -> bool:
        if self.used + n > self.cap:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


def parsed_estimate(body: bytes) -> int:
    """An upper estimate of the memory ``json.loads(body)`` takes."""
    return len(body) + _PER_OBJECT * body.count(b"{") + _PER_ARRAY * body.count(b"[") + _PER_ITEM * body.count(b",")


def bounded_node(read_cap: int, parse_cap: int, pool_cap: int | None = None) -> type[AiohttpHttpNode]:
    """A node class whose answers are at most ``read_cap`` bytes and ``parse_cap`` estimated parsed bytes,
    and whose concurrent reads hold at most ``pool_cap`` bytes together (3 answers' worth by default)."""
    pool = _Pool(pool_cap or 3 * read_cap)

    class BoundedResponse(aiohttp.ClientResponse):
        async def read(self) -> bytes:
            if self._body is None:
                try:
                    self._body = await self._read_capped()
                except BaseException:
                    self.close()  # drop the connection: the unread rest must not reach the next request
                    raise
            protocol = self._connection and self._connection.protocol
            if protocol is None or not protocol.upgraded:
                await self._wait_released()
            return self._body

        async def _read_capped(self) -> bytes:
            if self.content_length is not None and self.content_length > read_cap:
                raise ResponseTooLarge(read_cap, self.content_length)
            buf = bytearray()
            try:
                async for chunk in self.content.iter_any():
                    if len(buf) + len(chunk) > read_cap:
                        raise ResponseTooLarge(read_cap)
                    if not pool.take(len(chunk)):
                        raise SidecarBusy(pool.cap)
                    buf += chunk
                body = bytes(buf)
            finally:
                pool.give(len(buf))
            del buf
            estimate = parsed_estimate(body)
            if estimate > parse_cap:
                raise ResponseTooLarge(parse_cap, estimate, parsed=True)
            return body

    class BoundedNode(AiohttpHttpNode):
        def _create_aiohttp_session(self) -> None:
            """The stock session (elastic_transport 8.19), with ``response_class=BoundedResponse``."""
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self.session = aiohttp.ClientSession(
                headers=self.headers,
                skip_auto_headers=("accept", "accept-encoding", "user-agent"),
                auto_decompress=True,
                cookie_jar=aiohttp.DummyCookieJar(),
                response_class=BoundedResponse,
                connector=aiohttp.TCPConnector(limit_per_host=self._connections_per_node, use_dns_cache=True,
                                               enable_cleanup_closed=_NEEDS_CLEANUP_CLOSED,
                                               ssl=self._ssl_context or False),
            )

    BoundedNode.read_cap, BoundedNode.parse_cap = read_cap, parse_cap  # type: ignore[attr-defined]
    return BoundedNode


#: ``application/vnd.elasticsearch+json; compatible-with=8`` -> ``application/json`` (and x-ndjson).
_VENDOR_MEDIA_TYPE = re.compile(r"application/vnd\.elasticsearch\+([\w.-]+)\s*;\s*compatible-with=\d+")


def opensearch_node(node_class: type[AiohttpHttpNode]) -> type[AiohttpHttpNode]:
    """``node_class`` speaking to OpenSearch (engines.py): plain JSON media types out (OpenSearch
    answers 406 to Elastic's vendor types), and answers marked with the header the 8.x client's
    product check looks for. Bounds, retries and errors stay those of ``node_class``."""

    class OpenSearchNode(node_class):  # type: ignore[valid-type, misc]
        async def perform_request(self, method, target, body=None, headers=None, **kwargs):
            if headers:
                headers = HttpHeaders(headers)
                for name in ("accept", "content-type"):
                    if name in headers:
                        headers[name] = _VENDOR_MEDIA_TYPE.sub(r"application/\1", headers[name])
            response = await super().perform_request(method, target, body=body, headers=headers, **kwargs)
            response.meta.headers["x-elastic-product"] = "Elasticsearch"
            return response

    return OpenSearchNode
