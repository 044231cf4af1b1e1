"""What the sidecar refuses to send to Elasticsearch: system and hidden indices, unbounded aggregations.

System indices (``.security-*``, ``.kibana*``, ``.tasks`` ...) hold credentials and other tenants'
state; the sidecar usually runs with the datastore's superuser, so it must not become a way to read
them. Every name starting with ``.`` is refused (in comma lists, after ``-`` or ``cluster:``), and
wildcards are expanded to open, non-hidden indices only. ``ES_ALLOW_SYSTEM_INDICES=true`` lifts both.

Aggregations are bounded in the request (bucket and hit sizes clamped, ``scripted_metric`` refused
unless allowed), because the client parses a whole answer at once: a ``terms`` agg with size 65,536
over 1 KB keys was 187 MiB of sidecar RSS before the read cap in ``transport.py`` even applies.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sidecars.common import capping
from sidecars.common.config import Limits
from sidecars.common.tools import fail

ALLOW_ENV = "ES_ALLOW_SYSTEM_INDICES"
SCRIPTED_ENV = "ES_ALLOW_SCRIPTED_METRIC"

#: Aggregations whose ``size`` is a number of buckets or hits, and the most we let through.
BUCKET_SIZED = frozenset({"terms", "significant_terms", "significant_text", "multi_terms", "composite",
                          "categorize_text", "frequent_item_sets"})
TOP_HITS_MAX = 10
MAX_AGG_DEPTH = 12


def _show(name: str) -> str:
    """An index name as echoed in an error: bounded, whatever the caller sent."""
    return repr(name[:80] + ("…" if len(name) > 80 else ""))


class IndexGuard:
    def __init__(self, allow_system: bool):
        self.allow_system = allow_system
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
        return part.startswith(".")

    def check(self, expression: str | None) -> None:
        """Refuse an index expression that names a system index anywhere in its comma list."""
        if self.allow_system or not expression:
            return
        for name in expression.split(","):
            if self.system(name):
                raise fail(self.refused(name.strip()))

    def visible(self, name: str | None) -> bool:
        """Rows of list tools and hits whose index is a system index are dropped (defence in depth:
        an alias or a non-hidden dot index could still match a wildcard)."""
        return self.allow_system or not (name or "").startswith(".")

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
