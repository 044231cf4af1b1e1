"""Keeps one search answer inside the memory budget: asks how big the documents of an index are
on average (``_cat/indices``, cached for a minute) and requests no more hits than fit.

The client parses a whole response at once, so 100 hits of 2 MB documents would be ~200 MB of
JSON and several times that as Python objects, far past the sidecar's 128Mi limit.
"""

from __future__ import annotations

import time

# JSON of the hits we are willing to receive per search, and how much bigger a document is as JSON
# than in the (compressed) primary store.
READ_BUDGET = 4 * 1024 * 1024
STORE_TO_JSON = 2.0
TTL_SECONDS = 60.0


class DocSizes:
    def __init__(self, client, ttl: float = TTL_SECONDS, budget: int = READ_BUDGET,
                 expand_wildcards: str | None = None):
        self.client = client
        self.ttl = ttl
        self.budget = budget
        self.expand_wildcards = expand_wildcards
        self._cache: dict[str, tuple[float, float | None]] = {}

    async def average(self, index: str) -> float | None:
        """Average primary-store bytes per document over the indices matching ``index`` (None if unknown)."""
        hit = self._cache.get(index)
        now = time.monotonic()
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        try:
            rows = await self.client.cat.indices(index=index, format="json", bytes="b", h="docs.count,pri.store.size",
                                                 expand_wildcards=self.expand_wildcards)
            docs = sum(int(r.get("docs.count") or 0) for r in rows.body)
            store = sum(int(r.get("pri.store.size") or 0) for r in rows.body)
            average = store / docs if docs else None
        except Exception:  # noqa: BLE001 - sizing is advisory; the search itself reports real errors
            average = None
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[index] = (now, average)
        return average

    async def affordable_hits(self, index: str, wanted: int) -> int:
        average = await self.average(index)
        if not average:
            return wanted
        return max(1, min(wanted, int(self.budget // (average * STORE_TO_JSON))))
