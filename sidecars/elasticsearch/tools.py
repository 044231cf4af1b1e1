"""The Elasticsearch tools: Elastic's own MCP server set (list_indices, get_mappings, search, esql,
get_shards) plus cr7258's read tools; writes only when read-only mode is off, never an index deletion.
The same tools serve OpenSearch (engines.py), without ``esql``.

Hits are limited by asking for ``size <= MCP_MAX_ITEMS``; documents and aggregations are then cut
to ``MCP_MAX_VALUE_BYTES`` per string and ``MCP_MAX_RESULT_BYTES`` overall, marked ``truncated``.
Aggregation sizes and ES|QL rows are bounded in the request, answers while they are read
(transport.py), and system indices are refused in every tool (guard.py).
"""

import json
from dataclasses import replace
from typing import Annotated, Any

from elasticsearch import ApiError, NotFoundError
from pydantic import Field

from sidecars.common import capping
from sidecars.common.app import Sidecar
from sidecars.common.config import Limits
from sidecars.common.tools import fail

from . import models as m
from .guard import IndexGuard, bound_aggs, esql_with_limit, fit
from .sizing import DocSizes
from .transport import ResponseTooLarge

Index = Annotated[str, Field(min_length=1, description="Index name, alias or pattern")]
Query = Annotated[dict[str, Any] | None, Field(description="Query DSL, e.g. {\"match\": {\"title\": \"redis\"}}")]


# What `search` reads of an answer: no _shards, no per-hit metadata we do not return.
SEARCH_FIELDS = ["took", "timed_out", "hits.total", "hits.hits._index", "hits.hits._id", "hits.hits._score",
                 "hits.hits._source", "aggregations"]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def register(sidecar: Sidecar) -> None:
    es = sidecar.backend.client
    # The result travels twice in an MCP answer (structuredContent and its JSON text block): half the
    # budget each keeps the whole HTTP response within MCP_MAX_RESULT_BYTES.
    limits = replace(sidecar.settings.limits, max_result_bytes=sidecar.settings.limits.max_result_bytes // 2)
    read, write = sidecar.registry.read, sidecar.registry.write
    imax = limits.max_items
    timeout = f"{int(sidecar.settings.backend_timeout * 1000)}ms"
    es_settings = sidecar.backend.settings
    guard = IndexGuard(es_settings.allow_system_indices, es)
    wild = guard.expand
    # Hits of one search: half of what the transport reads at once, the rest is metadata and aggregations.
    sizes = DocSizes(es, budget=sidecar.backend.read_cap // 2, expand_wildcards=wild)

    @read("List indices")
    async def list_indices(pattern: str = "*", include_hidden: bool = False) -> m.Indices:
        """Indices matching a pattern with health, status, document count and size. System indices
        (names starting with '.') are listed only when the sidecar allows them."""
        guard.check(pattern)
        if include_hidden and not guard.allow_system:
            raise fail(guard.refused(".* (include_hidden)"))
        rows = await es.cat.indices(index=pattern, format="json", expand_wildcards="all" if include_hidden else "open",
                                    h="index,health,status,docs.count,store.size,pri,rep", s="index")
        kept, cut = capping.items([r for r in rows.body if guard.visible(r.get("index"))], imax)
        return m.Indices(indices=[m.IndexInfo(index=r["index"], health=r.get("health"), status=r.get("status"),
                                              docs_count=_int(r.get("docs.count")), store_size=r.get("store.size"),
                                              primaries=_int(r.get("pri")), replicas=_int(r.get("rep")))
                                  for r in kept], truncated=cut)

    @read("Get index mappings")
    async def get_mappings(index: Index) -> m.Mappings:
        """The field mappings of an index (or of every index matching a pattern)."""
        raw = await es.indices.get_mapping(index=await guard.scope(index), expand_wildcards=wild)
        data, cut = fit({name: body.get("mappings", {}) for name, body in raw.body.items() if guard.visible(name)},
                        limits)
        return m.Mappings(mappings=data, truncated=cut)

    @read("Search documents")
    async def search(index: Index, query: Query = None,
                     size: Annotated[int, Field(ge=0)] = 10, offset: Annotated[int, Field(ge=0, description="hits to skip")] = 0,
                     source: Annotated[list[str] | bool | None,
                                       Field(description="fields to return, false for none")] = None,
                     sort: list[Any] | None = None,
                     aggs: dict[str, Any] | None = None) -> m.SearchResult:
        """Search with the query DSL. At most MCP_MAX_ITEMS hits, fewer when documents are big (the
        answer says truncated); `source` filters returned fields, false returns none. Aggregation
        sizes are capped (buckets at MCP_MAX_ITEMS, top_hits at 10); scripted_metric is refused."""
        aggs, clamped = bound_aggs(aggs, limits, allow_scripted=es_settings.allow_scripted_metric)
        await guard.scope_body([query, aggs, sort])
        index = await guard.scope(index)
        want = min(size, imax)
        if want and source is not False:
            want = await sizes.affordable_hits(index, want)  # big documents: fewer hits per answer
        while True:
            try:
                resp = await es.search(index=index, query=query, size=want, from_=offset, source=source, sort=sort,
                                       aggs=aggs, timeout=timeout, track_total_hits=True, expand_wildcards=wild,
                                       filter_path=SEARCH_FIELDS)
                break
            except ResponseTooLarge:
                if want <= 1 or aggs:  # aggregations would be computed again for nothing
                    raise
                want //= 4  # documents bigger than their index's average: fewer per answer
        body = resp.body
        found = body.get("hits") or {}
        raw_hits, truncated = [], size > want or clamped
        for h in found.get("hits") or []:
            if not guard.visible(h.get("_index")):
                truncated = True
                continue
            src, cut = capping.deep(h.get("_source"), limits) if "_source" in h else (None, False)
            truncated |= cut
            raw_hits.append({"index": h["_index"], "id": h["_id"], "score": h.get("_score"), "source": src})
        raw_hits, cut = capping.shrink_to_budget(raw_hits, limits)
        hits = [m.Hit(**h) for h in raw_hits]
        aggregations, agg_cut = None, False
        if "aggregations" in body:
            room = max(1024, limits.max_result_bytes - len(json.dumps(raw_hits, default=str)))
            aggregations, agg_cut = fit(body["aggregations"], limits, room)
        total = found.get("total") or {"value": len(hits), "relation": "eq"}
        return m.SearchResult(total=total["value"], total_relation=total["relation"], hits=hits,
                              aggregations=aggregations, took_ms=body.get("took", 0),
                              timed_out=body.get("timed_out", False), truncated=truncated or cut or agg_cut)

    if sidecar.backend.engine.esql:  # Elasticsearch only (engines.py)
        _register_esql(sidecar, guard, limits)

    @read("Count documents")
    async def count(index: Index, query: Query = None) -> m.CountResult:
        """How many documents match a query (all documents without one)."""
        await guard.scope_body(query)
        resp = await es.count(index=await guard.scope(index), query=query, expand_wildcards=wild)
        return m.CountResult(index=index, count=resp["count"])

    @read("Get a document")
    async def get_document(index: Annotated[str, Field(min_length=1)], id: Annotated[str, Field(min_length=1)],
                           source: list[str] | None = None) -> m.Document:
        """One document by id; `source` limits the returned fields."""
        await guard.scope(index)
        try:
            resp = await es.get(index=index, id=id, source_includes=source)
        except NotFoundError as exc:
            if isinstance(exc.body, dict) and exc.body.get("found") is False:
                return m.Document(index=index, id=id, found=False)
            raise
        if not guard.visible(resp.get("_index")):  # an alias that points at a system index
            raise fail(guard.refused(resp["_index"]))
        src, cut = fit(resp.get("_source"), limits)
        return m.Document(index=resp["_index"], id=resp["_id"], found=True, version=resp.get("_version"),
                          source=src, truncated=cut)

    @read("Cluster health")
    async def cluster_health(index: str | None = None) -> m.ClusterHealth:
        """Cluster (or index) health: green, yellow or red, with shard counts."""
        h = await es.cluster.health(index=await guard.scope(index) if index else None, timeout=timeout,
                                    expand_wildcards=wild if index else None)
        return m.ClusterHealth(cluster_name=h["cluster_name"], status=h["status"], number_of_nodes=h["number_of_nodes"],
                               active_shards=h["active_shards"], unassigned_shards=h["unassigned_shards"],
                               active_shards_percent=h["active_shards_percent_as_number"], timed_out=h["timed_out"])

    @read("Shards")
    async def get_shards(index: str | None = None) -> m.Shards:
        """Shard placement and state for an index pattern (all indices without one)."""
        shown = None
        if not guard.allow_system:  # `_cat/shards` has no expand_wildcards: keep the indices a wildcard may show
            index = await guard.scope(index or "*")
            resolved = (await es.indices.resolve_index(name=index, expand_wildcards="open")).body
            shown = {i["name"] for i in resolved.get("indices", [])}
            shown.update(b for d in resolved.get("data_streams", []) for b in d.get("backing_indices", []))
        rows = await es.cat.shards(index=index, format="json", h="index,shard,prirep,state,docs,store,node")
        kept, cut = capping.items([r for r in rows.body if guard.visible(r.get("index"))
                                   and (shown is None or r.get("index") in shown)], imax)
        return m.Shards(shards=[m.ShardInfo(index=r["index"], shard=int(r["shard"]), prirep=r["prirep"],
                                            state=r["state"], docs=_int(r.get("docs")), store=r.get("store"),
                                            node=r.get("node")) for r in kept], truncated=cut)

    @read("Aliases")
    async def list_aliases(pattern: str = "*") -> m.Aliases:
        """Aliases matching a pattern and the indices they point to."""
        guard.check(pattern)
        rows = await es.cat.aliases(name=pattern, format="json", h="alias,index,is_write_index", expand_wildcards=wild)
        kept, cut = capping.items(
            [r for r in rows.body if guard.visible(r.get("alias")) and guard.visible(r.get("index"))], imax)
        return m.Aliases(aliases=[m.Alias(alias=r["alias"], index=r["index"],
                                          is_write_index={"true": True, "false": False}.get(r.get("is_write_index")))
                                  for r in kept], truncated=cut)

    # ------------------------------------------------------------------ writes
    @write(destructive=True, idempotent=False, title="Index a document")
    async def index_document(index: Annotated[str, Field(min_length=1)], document: dict[str, Any],
                             id: str | None = None, refresh: bool = False) -> m.WriteResult:
        """Create or replace a document (a new id is generated when `id` is omitted)."""
        await guard.scope(index)
        resp = await es.index(index=index, id=id, document=document, refresh="true" if refresh else None)
        return m.WriteResult(index=resp["_index"], id=resp["_id"], result=resp["result"], version=resp["_version"])

    @write(destructive=True, idempotent=True, title="Delete a document")
    async def delete_document(index: Annotated[str, Field(min_length=1)], id: Annotated[str, Field(min_length=1)],
                              refresh: bool = False) -> m.WriteResult:
        """Delete one document by id (never an index)."""
        await guard.scope(index)
        try:
            resp = await es.delete(index=index, id=id, refresh="true" if refresh else None)
        except NotFoundError as exc:
            if isinstance(exc.body, dict) and exc.body.get("result") == "not_found":
                return m.WriteResult(index=index, id=id, result="not_found")
            raise
        return m.WriteResult(index=resp["_index"], id=resp["_id"], result=resp["result"], version=resp["_version"])

    @write(destructive=False, idempotent=False, title="Create an index")
    async def create_index(index: Annotated[str, Field(min_length=1)], mappings: dict[str, Any] | None = None,
                           settings: dict[str, Any] | None = None) -> m.WriteResult:
        """Create a new index with optional mappings and settings (fails if it exists)."""
        guard.check(index)
        resp = await es.indices.create(index=index, mappings=mappings, settings=settings)
        return m.WriteResult(index=resp["index"], result="acknowledged" if resp["acknowledged"] else "not_acknowledged")


def _register_esql(sidecar: Sidecar, guard: IndexGuard, limits: Limits) -> None:
    es = sidecar.backend.client
    read = sidecar.registry.read
    imax = limits.max_items

    @read("Run an ES|QL query")
    async def esql(query: Annotated[str, Field(min_length=1, description="e.g. FROM logs | STATS count(*) BY host")]
                   ) -> m.EsqlResult:
        """Run an ES|QL query (Elasticsearch 8.11+); at most MCP_MAX_ITEMS rows are returned (the
        sidecar appends a LIMIT). System indices are refused in FROM/TS/JOIN."""
        guard.check_esql(query)
        try:
            resp = await es.esql.query(query=esql_with_limit(query, imax), format="json",
                                       filter_path="columns,values")
        except ApiError as exc:
            if exc.meta.status in (404, 405) or (exc.meta.status == 400 and "no handler" in str(exc.body)):
                raise fail("ES|QL is not available on this cluster (it needs Elasticsearch 8.11+ with the "
                           "default x-pack distribution)") from None
            raise
        body = resp.body
        rows, cut = capping.items(body.get("values") or [], imax)
        rows, deep_cut = fit(rows, limits)
        return m.EsqlResult(columns=[m.EsqlColumn(name=c["name"], type=c["type"]) for c in body.get("columns", [])],
                            rows=rows, truncated=cut or deep_cut)
