"""What the sidecar refuses to send to Elasticsearch: system and hidden indices, unbounded aggregations.

System indices (``.security-*``, ``.kibana*``, ``.tasks`` ...) hold credentials and other tenants'
state; the sidecar usually runs with the datastore's superuser, so it must not become a way to read
them. Every name starting with ``.`` is refused (in comma lists, after ``-`` or ``cluster:``) except a
data stream's backing index (``.ds-logs-app-…``: user data). Wildcards are expanded to open, non-hidden
indices only (all system indices of Elasticsearch 8 are hidden), and the expression is resolved
(``_resolve/index``, cached briefly) so that neither a legacy non-hidden dot index matched by a
wildcard nor an innocent-looking alias onto a system index gets through: the first is excluded, the
second refused. ``ES_ALLOW_SYSTEM_INDICES=true`` lifts all of it.

Aggregations are bounded in the request (bucket and hit sizes clamped, ``scripted_metric`` refused
unless allowed), because the client parses a whole answer at once: a ``terms`` agg with size 65,536
over 1 KB keys was 187 MiB of sidecar RSS before the read cap in ``transport.py`` even applies.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from sidecars.common import capping
from sidecars.common.config import Limits
from sidecars.common.tools import fail
from elasticsearch import ApiError, AuthorizationException, NotFoundError
from mcp.server.mcpserver.exceptions import ToolError

ALLOW_ENV = "ES_ALLOW_SYSTEM_INDICES"
SCRIPTED_ENV = "ES_ALLOW_SCRIPTED_METRIC"

#: Aggregations whose ``size`` is a number of buckets or hits, and the most we let through.
BUCKET_SIZED = frozenset({"terms", "significant_terms", "significant_text", "multi_terms", "composite",
                          "categorize_text", "frequent_item_sets"})
TOP_HITS_MAX = 10
MAX_AGG_DEPTH = 12
RESOLVE_TTL = 10.0
#: Backing indices of data streams and their failure stores: user data behind a dot name.
DATA_STREAM_PREFIXES = (".ds-", ".fs-")


def _show(name: str) -> str:
    """An index name as echoed in an error: bounded, whatever the caller sent."""
    return repr(name[:80] + ("…" if len(name) > 80 else ""))


class IndexGuard:
    def __init__(self, allow_system: bool, client=None):
        self.allow_system = allow_system
        self.client = client
        self._resolved: dict[str, tuple[float, str | Exception]] = {}
        #: ``expand_wildcards`` for every API that takes it: ``*`` and ``_all`` never reach hidden
        #: (system) indices unless allowed; ``None`` keeps Elasticsearch's own default.
        self.expand = None if allow_system else "open"

    def refused(self, name: str) -> str:
        return (f"index {_show(name)} is a system or hidden index (its name starts with '.'); this sidecar "
                f"refuses those unless {ALLOW_ENV}=true is set on it")

    def system(self, name: str) -> bool:
        """A name or pattern that addresses a system/hidden index: ``.x``, ``-.x``, ``remote:.x``, ``<.x-{now}>``."""
        part = name.strip().lstrip("-").strip()
        part = part.rsplit(":", 1)[-1].strip().strip('"').strip()
        if part.startswith("<"):  # date math: <.logs-{now/d}>
            part = part[1:]
        if part.startswith(DATA_STREAM_PREFIXES):
            part = part[4:]  # .ds-logs-app-… is user data; .ds-.fleet-… is a system data stream
        return part.startswith(".")

    def check(self, expression: str | None) -> None:
        """Refuse an index expression that names a system index anywhere in its comma list."""
        if self.allow_system or not expression:
            return
        for name in expression.split(","):
            if self.system(name):
                raise fail(self.refused(name.strip()))

    async def scope_body(self, body: Any) -> None:
        """Refuse a query or aggregation that names a system index (or an alias onto one) inside it: a
        ``terms`` lookup (``{"index": ".security-7", "id": …}``), ``more_like_this``'s ``like``
        documents, an indexed shape, ``pinned`` docs — each reads another index's documents."""
        if self.allow_system:
            return
        names: list[str] = []
        _index_names(body, names, 0)
        for name in dict.fromkeys(names):
            try:
                await self.scope(name)
            except ApiError:
                # Not an index name at all (a document field called "index" in a match query): an
                # explicit system name was refused above, and a real lookup of it fails in Elasticsearch.
                continue

    def visible(self, name: str | None) -> bool:
        """Rows of list tools and hits whose index is a system index are dropped (defence in depth:
        an alias or a non-hidden dot index could still match a wildcard)."""
        return self.allow_system or not self.system(name or "")

    async def scope(self, expression: str) -> str:
        """The index expression to send: explicit system names and aliases onto system indices refused,
        system indices a wildcard would match (legacy non-hidden dot indices) excluded by name."""
        self.check(expression)
        if self.allow_system or self.client is None:
            return expression
        now = time.monotonic()
        hit = self._resolved.get(expression)
        if hit is None or now - hit[0] > RESOLVE_TTL:
            try:
                hit = (now, await self._resolve(expression))
            except ToolError as exc:
                hit = (now, exc)
            except NotFoundError:
                # A missing explicit name: nothing to leak; the call itself reports it (or a write creates it).
                return expression
            except AuthorizationException:
                # A key without view_index_metadata: not a superuser, and Elasticsearch grants no role
                # access to restricted system indices (.security-*) unless allow_restricted_indices is
                # set on it; the names were checked above. The call itself runs under the same key.
                return expression
            if len(self._resolved) > 512:
                self._resolved.clear()
            self._resolved[expression] = hit
        if isinstance(hit[1], Exception):
            raise hit[1]
        return hit[1]

    async def _resolve(self, expression: str) -> str:
        # `_all` means `*`; OpenSearch resolves `_all` to nothing (Elasticsearch to everything), which
        # would let `_all` reach a legacy dot index unexcluded: resolve what it means instead.
        parts = ["*" if p.strip() == "_all" else p for p in expression.split(",")]
        resolved = (await self.client.indices.resolve_index(name=",".join(parts), expand_wildcards="open")).body
        hidden: list[str] = [i["name"] for i in resolved.get("indices", []) if self.system(i.get("name", ""))]
        hidden += [a["name"] for a in resolved.get("aliases", [])
                   if any(self.system(i) for i in a.get("indices", [])) and not self.system(a.get("name", ""))]
        if not hidden:
            return expression
        explicit = {n.strip() for n in expression.split(",") if "*" not in n}
        named = [n for n in hidden if n in explicit]
        if named:  # an explicit alias (or name) onto a system index
            raise fail(self.refused(named[0]) + " (it points at one)")
        # Exclusions do not apply to `_all` (an invalid name once combined): `*` means the same.
        return ",".join([*parts, *(f"-{n}" for n in sorted(hidden))])

    # ------------------------------------------------------------------ ES|QL
    _TOKEN = re.compile(r'"""(?:.|\n)*?"""|"(?:[^"\\\n]|\\.)*"|`[^`]*`|//[^\n]*|/\*(?:.|\n)*?\*/|\||,|[^\s,|"`]+',
                        re.S)
    _SOURCE_COMMANDS = frozenset({"from", "ts", "metrics", "join"})

    def check_esql(self, query: str) -> None:
        """Refuse ES|QL whose source commands (``FROM``, ``TS``, ``METRICS``, ``LOOKUP JOIN``) name a
        system index. Tokens are read the way ES|QL reads them: quoted names and comments count."""
        if self.allow_system:
            return
        in_source = False
        for match in self._TOKEN.finditer(query):
            token = match.group(0)
            if token.startswith(("//", "/*")):
                continue
            if token == "|":
                in_source = False
                continue
            if token.lower() in self._SOURCE_COMMANDS and not token.startswith(('"', "`")):
                in_source = True
                continue
            if in_source and token != ",":
                name = token.strip('"`')
                if self.system(name):
                    raise fail(self.refused(name))


def _index_names(body: Any, out: list[str], depth: int) -> None:
    if depth > 64 or len(out) > 64:
        return
    if isinstance(body, dict):
        for key, value in body.items():
            if key in ("index", "_index"):
                out.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v)
            _index_names(value, out, depth + 1)
    elif isinstance(body, list):
        for value in body:
            _index_names(value, out, depth + 1)


def esql_with_limit(query: str, max_rows: int) -> str:
    """Append a ``LIMIT`` so Elasticsearch never builds more rows than we return (one more than
    ``max_rows``, to tell the caller the answer was cut). A later LIMIT wins when smaller, so the
    caller's own LIMIT still applies; the newline ends a trailing ``//`` comment."""
    return f"{query}\n| LIMIT {max_rows + 1}"


def bound_aggs(aggs: dict[str, Any] | None, limits: Limits, *, allow_scripted: bool) -> tuple[dict | None, bool]:
    """A copy of ``aggs`` with every bucket size at most ``MCP_MAX_ITEMS`` and every ``top_hits`` size at
    most 10; ``scripted_metric`` refused unless allowed. Returns (aggs, whether a size was lowered)."""
    if not aggs:
        return aggs, False
    clamped = False

    def walk(node: Any, depth: int) -> Any:
        nonlocal clamped
        if depth > MAX_AGG_DEPTH:
            raise fail(f"aggregations nested deeper than {MAX_AGG_DEPTH} levels are refused")
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for name, agg in node.items():
            if not isinstance(agg, dict):
                out[name] = agg
                continue
            body = dict(agg)
            for kind, params in agg.items():
                if kind in ("aggs", "aggregations"):
                    body[kind] = walk(params, depth + 1)
                elif kind == "scripted_metric" and not allow_scripted:
                    raise fail(f"aggregation {_show(str(name))}: scripted_metric is refused (it runs arbitrary "
                               f"scripts and its result has no size bound); set {SCRIPTED_ENV}=true to allow it")
                elif kind in BUCKET_SIZED and isinstance(params, dict):
                    body[kind] = _clamp(params, "size", limits.max_items)
                elif kind == "top_hits" and isinstance(params, dict):
                    body[kind] = _clamp(params, "size", min(TOP_HITS_MAX, limits.max_items))
                if body[kind] is not params and kind not in ("aggs", "aggregations"):
                    clamped = True
            out[name] = body
        return out

    return walk(aggs, 0), clamped


def _clamp(params: dict[str, Any], key: str, maximum: int) -> dict[str, Any]:
    """``params`` itself when ``params[key]`` is within ``maximum``, else a copy with it lowered."""
    value = params.get(key)
    try:
        number = int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return params  # not a number: Elasticsearch reports it
    if number is None or number <= maximum:
        return params
    return {**params, key: maximum}


def fit(value: Any, limits: Limits, budget: int | None = None) -> tuple[Any, bool]:
    """``capping.deep`` with tighter caps until the JSON fits ``budget`` (``MCP_MAX_RESULT_BYTES``):
    ``deep`` bounds each list and string, not their sum, and nested aggregations multiply them."""
    budget = limits.max_result_bytes if budget is None else budget
    items, value_bytes = limits.max_items, limits.max_value_bytes
    while True:
        out, cut = capping.deep(value, Limits(max_items=items, max_value_bytes=value_bytes,
                                              max_result_bytes=limits.max_result_bytes))
        if len(json.dumps(out, default=str)) <= budget or (items == 1 and value_bytes == 16):
            return out, cut
        items, value_bytes = max(1, items // 2), max(16, value_bytes // 2)
        cut = True
