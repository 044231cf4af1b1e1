"""The Elasticsearch sidecar against a real Elasticsearch 8 node (built from Maven Central jars)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import es_env
from .helpers import SidecarProcess, call, calls, error_text, list_tools

pytestmark = pytest.mark.slow

READ_TOOLS = {"list_indices", "get_mappings", "search", "esql", "count", "get_document", "cluster_health",
              "get_shards", "list_aliases"}
WRITE_TOOLS = {"index_document", "delete_document", "create_index"}


def ok(result) -> dict:
    assert not result.is_error, error_text(result)
    return result.structured_content


def test_read_only_by_default(es_sidecar):
    tools = {t.name: t for t in list_tools(es_sidecar.url)}
    assert set(tools) == READ_TOOLS
    for t in tools.values():
        assert t.annotations.read_only_hint is True and t.annotations.destructive_hint is False
        assert t.output_schema["type"] == "object"
    result = call(es_sidecar.url, "index_document", {"index": "books", "document": {"title": "x"}})
    assert result.is_error


def test_write_tools_when_enabled_and_no_index_deletion(es_sidecar_rw):
    tools = {t.name: t for t in list_tools(es_sidecar_rw.url)}
    assert set(tools) == READ_TOOLS | WRITE_TOOLS
    assert tools["delete_document"].annotations.destructive_hint is True
    assert tools["create_index"].annotations.destructive_hint is False
    assert not [n for n in tools if "delete_index" in n or n.endswith("_indices") and n != "list_indices"]


def test_list_indices_mappings_health_shards_aliases(es_sidecar):
    out = calls(es_sidecar.url, [
        ("list_indices", {"pattern": "boo*"}),
        ("list_indices", {"pattern": "nothing-*"}),
        ("get_mappings", {"index": "books"}),
        ("cluster_health", {}),
        ("get_shards", {"index": "books"}),
        ("list_aliases", {}),
    ])
    [books] = ok(out[0])["indices"]
    assert books["index"] == "books" and books["docs_count"] == 30 and books["health"] == "green"
    assert ok(out[1])["indices"] == []
    assert ok(out[2])["mappings"]["books"]["properties"]["tag"] == {"type": "keyword"}
    health = ok(out[3])
    assert health["status"] in ("green", "yellow") and health["number_of_nodes"] == 1
    assert ok(out[4])["shards"] == [{"index": "books", "shard": 0, "prirep": "p", "state": "STARTED", "docs": 30,
                                     "store": ok(out[4])["shards"][0]["store"], "node": "es-test-0"}]
    assert {"alias": "library", "index": "books", "is_write_index": None} in ok(out[5])["aliases"]


def test_search_with_query_source_filtering_and_aggregations(es_sidecar):
    result = ok(call(es_sidecar.url, "search", {
        "index": "library", "query": {"match": {"title": "redis"}}, "size": 3, "source": ["year"],
        "sort": [{"year": "asc"}], "aggs": {"tags": {"terms": {"field": "tag"}}},
    }))
    assert result["total"] == 15 and result["total_relation"] == "eq"
    assert [h["source"] for h in result["hits"]] == [{"year": 2001}, {"year": 2003}, {"year": 2005}]
    assert result["hits"][0]["id"] == "1" and result["hits"][0]["index"] == "books"
    assert sum(b["doc_count"] for b in result["aggregations"]["tags"]["buckets"]) == 15
    assert result["truncated"] is False
    paged = ok(call(es_sidecar.url, "search", {"index": "books", "size": 2, "offset": 28, "sort": [{"year": "asc"}],
                                               "source": False}))
    assert [h["id"] for h in paged["hits"]] == ["28", "29"] and paged["hits"][0]["source"] is None


def test_count_and_get_document(es_sidecar):
    out = calls(es_sidecar.url, [
        ("count", {"index": "books"}),
        ("count", {"index": "books", "query": {"term": {"tag": "t1"}}}),
        ("get_document", {"index": "books", "id": "7"}),
        ("get_document", {"index": "books", "id": "7", "source": ["title"]}),
        ("get_document", {"index": "books", "id": "404"}),
    ])
    assert ok(out[0])["count"] == 30 and ok(out[1])["count"] == 10
    assert ok(out[2])["source"] == {"title": "book 7 about redis", "year": 2007, "tag": "t1"}
    assert ok(out[3])["source"] == {"title": "book 7 about redis"}
    assert ok(out[4]) == {"index": "books", "id": "404", "found": False, "version": None, "source": None,
                          "truncated": False}


def test_bad_requests_are_clear_tool_errors(es_sidecar):
    out = calls(es_sidecar.url, [
        ("search", {"index": "nosuch"}),
        ("search", {"index": "books", "query": {"no_such_query": {}}}),
        ("esql", {"query": "FROM books | LIMIT 1"}),
    ])
    assert out[0].is_error and "index_not_found_exception" in error_text(out[0])
    assert out[1].is_error and "no_such_query" in error_text(out[1])
    # The test node is the server jar without x-pack, so ES|QL is absent: the tool must say so plainly.
    assert out[2].is_error and "ES|QL is not available" in error_text(out[2])
    assert es_sidecar.alive()


def test_hits_and_documents_are_capped(es_sidecar_rw):
    # es_sidecar_rw: MCP_MAX_ITEMS=5, MCP_MAX_VALUE_BYTES=1024
    big = ok(call(es_sidecar_rw.url, "index_document", {
        "index": "books", "id": "big", "document": {"title": "big", "blob": "z" * 100_000}, "refresh": True}))
    assert big["result"] == "created"
    try:
        many = ok(call(es_sidecar_rw.url, "search", {"index": "books", "size": 50}))
        assert len(many["hits"]) == 5 and many["truncated"] is True and many["total"] == 31
        doc = ok(call(es_sidecar_rw.url, "get_document", {"index": "books", "id": "big"}))
        assert doc["truncated"] is True and len(doc["source"]["blob"]) == 1024
        found = ok(call(es_sidecar_rw.url, "search", {"index": "books", "query": {"ids": {"values": ["big"]}}}))
        assert found["truncated"] is True and len(found["hits"][0]["source"]["blob"]) == 1024
    finally:
        call(es_sidecar_rw.url, "delete_document", {"index": "books", "id": "big", "refresh": True})


def test_write_tools(es_sidecar_rw, es_node):
    out = calls(es_sidecar_rw.url, [
        ("create_index", {"index": "notes", "mappings": {"properties": {"text": {"type": "text"}}},
                          "settings": {"number_of_replicas": 0}}),
        ("create_index", {"index": "notes"}),
        ("index_document", {"index": "notes", "id": "n1", "document": {"text": "hello"}, "refresh": True}),
        ("index_document", {"index": "notes", "id": "n1", "document": {"text": "hello again"}, "refresh": True}),
        ("count", {"index": "notes"}),
        ("delete_document", {"index": "notes", "id": "n1", "refresh": True}),
        ("delete_document", {"index": "notes", "id": "n1"}),
    ])
    assert ok(out[0])["result"] == "acknowledged"
    assert out[1].is_error and "resource_already_exists_exception" in error_text(out[1])
    assert ok(out[2])["result"] == "created" and ok(out[3])["result"] == "updated" and ok(out[3])["version"] == 2
    assert ok(out[4])["count"] == 1
    assert ok(out[5])["result"] == "deleted" and ok(out[6])["result"] == "not_found"
    assert es_node.request("GET", "/notes/_count")["count"] == 0


def test_health_and_metrics(es_sidecar):
    body = es_sidecar.get("/health").json()
    assert body["status"] == "ok" and body["backend"] == "elasticsearch" and body["round_trip_ms"] > 0
    call(es_sidecar.url, "count", {"index": "books"})
    assert 'mcp_tool_calls_total{outcome="ok",tool="count"}' in es_sidecar.get("/metrics").text


def test_node_down_then_back():
    """Stop the real node under a running sidecar, then start it again on the same port and data."""
    from tests.backends.elasticsearch_node import ElasticsearchNode

    with ElasticsearchNode() as node, SidecarProcess("elasticsearch", es_env(node, MCP_BACKEND_TIMEOUT="2")) as sidecar:
        node.request("PUT", "/k?wait_for_active_shards=1", {"settings": {"number_of_replicas": 0}})
        node.stop()
        result = call(sidecar.url, "count", {"index": "k"})
        assert result.is_error and "unreachable" in error_text(result)
        health = sidecar.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert sidecar.alive()
        node.start()
        result = call(sidecar.url, "count", {"index": "k"})
        assert not result.is_error, error_text(result)
        assert sidecar.get("/health").status_code == 200


ENTRY = Path(sys.executable).parent / "mcp-elasticsearch"


@pytest.mark.parametrize("env, named", [
    ({}, "ES_HOST"),
    ({"ES_HOST": "localhost"}, "ES_PORT"),
    ({"ES_HOST": "localhost", "ES_PORT": "92OO"}, "ES_PORT"),
    ({"ES_HOST": "localhost", "ES_PORT": "9200", "ES_SCHEME": "ftp"}, "ES_SCHEME"),
    ({"ES_HOST": "localhost", "ES_PORT": "9200", "ES_PASSWORD": "x"}, "ES_USERNAME"),
    ({"ES_HOST": "localhost", "ES_PORT": "9200", "ES_API_KEY": "k", "ES_USERNAME": "u", "ES_PASSWORD": "p"},
     "ES_API_KEY"),
    ({"ES_HOST": "localhost", "ES_PORT": "9200", "ES_CA_CERT": "/nope.pem"}, "ES_CA_CERT"),
    ({"ES_HOST": "localhost", "ES_PORT": "9200", "MCP_MAX_ITEMS": "0"}, "MCP_MAX_ITEMS"),
])
def test_bad_configuration_fails_fast_with_one_line(env, named):
    done = subprocess.run([str(ENTRY)], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and lines[0].startswith("configuration error:")


def test_big_documents_limit_hits_per_answer_and_memory(es_node):
    """30 documents of ~1 MB: a search for 50 hits returns only what fits the read budget."""
    doc = {"title": "big", "blob": "".join(f"{i:07d}" for i in range(150_000))}  # ~1 MB, poorly compressible
    bulk = "".join('{"index":{"_index":"bigdocs","_id":"%d"}}\n%s\n' % (i, __import__("json").dumps(doc))
                   for i in range(30))
    es_node.request("PUT", "/bigdocs", {"settings": {"number_of_replicas": 0},
                                        "mappings": {"properties": {"blob": {"type": "text", "index": False}}}})
    es_node.request("POST", "/_bulk?refresh=true", bulk)
    es_node.request("POST", "/bigdocs/_flush")
    with SidecarProcess("elasticsearch", es_env(es_node)) as sidecar:
        result = ok(call(sidecar.url, "search", {"index": "bigdocs", "size": 50}))
        assert result["total"] == 30 and result["truncated"] is True
        assert 1 <= len(result["hits"]) < 30
        assert all(len(h["source"]["blob"]) == 64 * 1024 for h in result["hits"])
        ids_only = ok(call(sidecar.url, "search", {"index": "bigdocs", "size": 50, "source": False}))
        assert len(ids_only["hits"]) == 30  # no documents fetched: no reason to cut
        peak = int(next(line for line in Path(f"/proc/{sidecar.proc.pid}/status").read_text().splitlines()
                        if line.startswith("VmHWM:")).split()[1]) / 1024
        assert peak < 128, f"peak RSS {peak:.0f} MiB"


# ----------------------------------------------------------------------------- system indices (issue 11, part 1)
@pytest.fixture(scope="module")
def system_indices(es_node):
    """A dot-named index (what .security-* looks like to a query), a hidden one, and an innocent-looking
    alias that points at the dot-named index."""
    es_node.request("PUT", "/.secret", {"settings": {"number_of_replicas": 0}})
    es_node.request("PUT", "/.secret/_doc/1?refresh=true", {"password_hash": "$2a$10$abc", "tag": "t1"})
    es_node.request("PUT", "/hidden-things", {"settings": {"number_of_replicas": 0, "index.hidden": True}})
    es_node.request("PUT", "/hidden-things/_doc/1?refresh=true", {"tag": "t1"})
    es_node.request("POST", "/_aliases", {"actions": [{"add": {"index": ".secret", "alias": "innocent"}}]})
    yield
    for index in (".secret", "hidden-things"):
        es_node.request("DELETE", f"/{index}")


SYSTEM_CALLS = [
    ("list_indices", {"pattern": ".secret"}),
    ("list_indices", {"pattern": "*", "include_hidden": True}),
    ("get_mappings", {"index": ".secret"}),
    ("get_mappings", {"index": "books,.secret"}),
    ("search", {"index": ".secret"}),
    ("search", {"index": "books, .sec*"}),
    ("search", {"index": "remote:.secret"}),
    ("search", {"index": "<.secret-{now/d}>"}),
    ("esql", {"query": "FROM .security-7 | LIMIT 1"}),
    ("esql", {"query": 'from books, ".secret" METADATA _index'}),
    ("esql", {"query": "FROM /* comment */ .secret"}),
    ("esql", {"query": "FROM books | LOOKUP JOIN .secret ON tag"}),
    ("search", {"index": "books", "query": {"terms": {"tag": {"index": ".secret", "id": "1", "path": "tag"}}}}),
    ("search", {"index": "books", "size": 0, "aggs": {"f": {"filter": {"terms": {"tag": {
        "index": "innocent,.secret", "id": "1", "path": "tag"}}}}}}),
    ("count", {"index": ".secret"}),
    ("count", {"index": "books", "query": {"terms": {"tag": {"index": "innocent", "id": "1", "path": "tag"}}}}),
    ("count", {"index": "books", "query": {"more_like_this": {"fields": ["tag"],
                                                              "like": [{"_index": ".secret", "_id": "1"}]}}}),
    ("get_document", {"index": ".secret", "id": "1"}),
    ("get_document", {"index": "innocent", "id": "1"}),  # an alias onto a system index
    ("cluster_health", {"index": ".secret"}),
    ("get_shards", {"index": ".secret"}),
    ("list_aliases", {"pattern": ".secret*"}),
]


@pytest.mark.parametrize("tool, args", SYSTEM_CALLS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(SYSTEM_CALLS)])
def test_system_indices_are_refused_in_every_tool(es_sidecar, system_indices, tool, args):
    result = call(es_sidecar.url, tool, args)
    text = error_text(result)
    assert result.is_error and "ES_ALLOW_SYSTEM_INDICES" in text and "system or hidden index" in text, text
    assert "$2a$10$" not in text


@pytest.mark.parametrize("tool, args", [
    ("index_document", {"index": ".secret", "id": "2", "document": {"x": 1}}),
    ("delete_document", {"index": ".secret", "id": "1"}),
    ("create_index", {"index": ".evil"}),
])
def test_write_tools_refuse_system_indices(es_sidecar_rw, system_indices, es_node, tool, args):
    result = call(es_sidecar_rw.url, tool, args)
    assert result.is_error and "ES_ALLOW_SYSTEM_INDICES" in error_text(result)
    assert es_node.request("GET", "/.secret/_count")["count"] == 1


def test_wildcards_and_listings_never_reach_system_or_hidden_indices(es_sidecar, system_indices):
    out = calls(es_sidecar.url, [
        ("list_indices", {}),
        ("get_mappings", {"index": "*"}),
        ("search", {"index": "*", "size": 100, "query": {"term": {"tag": "t1"}}}),
        ("search", {"index": "_all", "size": 0, "aggs": {"i": {"terms": {"field": "_index"}}}}),
        ("count", {"index": "*"}),
        ("get_shards", {}),
        ("list_aliases", {}),
    ])
    def shown(names) -> set:
        names = set(names)
        assert "books" in names, names
        return names & {".secret", "hidden-things", "innocent"}

    assert not shown(r["index"] for r in ok(out[0])["indices"])
    assert not shown(ok(out[1])["mappings"])
    assert not shown([h["index"] for h in ok(out[2])["hits"]] + ["books"])
    assert ok(out[2])["total"] == 10  # the books tagged t1: the matching .secret and hidden-things docs are not counted
    assert not shown(b["key"] for b in ok(out[3])["aggregations"]["i"]["buckets"])
    assert ok(out[4])["count"] == ok(call(es_sidecar.url, "count", {"index": "books,bigdocs*"}))["count"]
    assert not shown(r["index"] for r in ok(out[5])["shards"])
    assert not shown([a["alias"] for a in ok(out[6])["aliases"]] + ["books"])


def test_system_indices_reachable_when_explicitly_allowed(es_node, system_indices):
    with SidecarProcess("elasticsearch", es_env(es_node, ES_ALLOW_SYSTEM_INDICES="true")) as sidecar:
        doc = ok(call(sidecar.url, "get_document", {"index": ".secret", "id": "1"}))
        assert doc["found"] is True
        assert ok(call(sidecar.url, "count", {"index": ".secret"}))["count"] == 1
        warnings = [line for line in sidecar.audit_lines() if line.get("event") == "config_warning"]
        assert [w["setting"] for w in warnings] == ["ES_ALLOW_SYSTEM_INDICES=true"]


# ----------------------------------------------------------------------------- bounded aggregations (part 3)
def test_aggregation_sizes_are_clamped_and_scripted_metric_refused(es_sidecar_rw):
    # es_sidecar_rw: MCP_MAX_ITEMS=5
    out = calls(es_sidecar_rw.url, [
        ("search", {"index": "books", "size": 0, "aggs": {"y": {"terms": {"field": "year", "size": 65_536}}}}),
        ("search", {"index": "books", "size": 0, "aggs": {"c": {"composite": {
            "size": 65_536, "sources": [{"y": {"terms": {"field": "year"}}}]}}}}),
        ("search", {"index": "books", "size": 0, "aggs": {"t": {"terms": {"field": "tag", "size": "500"}, "aggs": {
            "top": {"top_hits": {"size": 100, "_source": ["year"]}}}}}}),
        ("search", {"index": "books", "size": 0, "aggs": {"s": {"scripted_metric": {"map_script": "1"}}}}),
        ("search", {"index": "books", "size": 0, "aggs": {"y": {"terms": {"field": "tag"}}}}),
    ])
    years = ok(out[0])
    assert len(years["aggregations"]["y"]["buckets"]) == 5 and years["truncated"] is True
    assert years["aggregations"]["y"]["sum_other_doc_count"] == 25  # Elasticsearch itself cut at 5
    composite = ok(out[1])["aggregations"]["c"]
    assert len(composite["buckets"]) == 5 and composite["after_key"] == {"y": 2004}
    groups = ok(out[2])["aggregations"]["t"]["buckets"]
    assert len(groups) == 3 and all(len(g["top"]["hits"]["hits"]) == 5 for g in groups)
    assert out[3].is_error and "ES_ALLOW_SCRIPTED_METRIC" in error_text(out[3])
    assert ok(out[4])["truncated"] is False  # nothing lowered: no false alarm
    # A document field called "index" is not an index name: its text must not break the query.
    assert ok(call(es_sidecar_rw.url, "count", {"index": "books", "query": {"match": {"index": "Hello World"}}}))


def test_aggregations_fit_the_result_budget(es_node):
    """Many small buckets stay under MCP_MAX_RESULT_BYTES even though no single list or string is too long."""
    env = es_env(es_node, MCP_MAX_RESULT_BYTES="4096")
    with SidecarProcess("elasticsearch", env) as sidecar:
        result = ok(call(sidecar.url, "search", {"index": "books", "size": 0, "aggs": {"y": {
            "terms": {"field": "year", "size": 100}, "aggs": {"top": {"top_hits": {"size": 10}}}}}}))
        assert result["truncated"] is True
        assert len(json.dumps(result["aggregations"])) <= 4096


def test_oversized_answers_are_refused_while_reading(es_node):
    """MCP_MAX_RESULT_BYTES=1024 lets the sidecar read 2 KiB at once: a 30-hit page is refused with a
    message, not parsed; a smaller page still works (the sidecar retries with fewer hits)."""
    env = es_env(es_node, MCP_MAX_RESULT_BYTES="1024")
    with SidecarProcess("elasticsearch", env) as sidecar:
        mappings = call(sidecar.url, "list_indices", {"pattern": "*"})
        assert not mappings.is_error, error_text(mappings)
        page = ok(call(sidecar.url, "search", {"index": "books", "size": 30}))
        assert 1 <= len(page["hits"]) < 30 and page["truncated"] is True
        big = call(sidecar.url, "search", {"index": "books", "size": 0, "aggs": {"y": {
            "terms": {"field": "year", "size": 100}, "aggs": {"top": {"top_hits": {"size": 10}}}}}})
        assert big.is_error and "MCP_MAX_RESULT_BYTES" in error_text(big)
        assert sidecar.alive() and ok(call(sidecar.url, "count", {"index": "books"}))["count"] >= 30


# ----------------------------------------------------------------------------- ES|QL and guard units
def test_esql_gets_a_row_limit_and_its_sources_are_read_like_esql_reads_them():
    from sidecars.elasticsearch.guard import IndexGuard, esql_with_limit

    assert esql_with_limit("FROM logs // all of them", 100) == "FROM logs // all of them\n| LIMIT 101"
    guard = IndexGuard(allow_system=False)
    for fine in ('FROM logs | WHERE msg == "from .secret" | LIMIT 5', "FROM logs-*, metrics METADATA _index",
                 "ROW a = 1.5 | EVAL b = a * .5", "FROM .ds-logs-app-2026.11.30-000001",
                 "FROM logs | STATS c = COUNT(*) BY host.name"):
        guard.check_esql(fine)
    for bad in ("FROM .security", "from logs,.kibana*", 'FROM "*:.tasks"', "TS .ds-.fleet-actions", "FROM `.secret`",
                "FROM logs | LOOKUP JOIN .lookup ON k", "FROM -.x", "FROM logs\n,\n.security"):
        with pytest.raises(Exception, match="ES_ALLOW_SYSTEM_INDICES"):
            guard.check_esql(bad)
    IndexGuard(allow_system=True).check_esql("FROM .security")


def test_refusals_echo_a_bounded_index_name():
    from sidecars.elasticsearch.guard import IndexGuard

    with pytest.raises(Exception) as refused:
        IndexGuard(allow_system=False).check("." + "x" * 1_000_000)
    assert len(str(refused.value)) < 400


# ----------------------------------------------------------------------------- API key (part 1)
@pytest.mark.parametrize("env, message", [
    ({"ES_API_KEY": "aWQ6a2V5", "ES_USERNAME": "elastic", "ES_PASSWORD": "pw"}, "ambiguous"),
    ({"ES_API_KEY": "aWQ6a2V5", "ES_PASSWORD": "pw"}, "ambiguous"),
    ({"ES_API_KEY": "not-a-key-s3cr3t"}, "ES_API_KEY is not an API key"),
    ({"ES_ALLOW_SYSTEM_INDICES": "perhaps"}, "ES_ALLOW_SYSTEM_INDICES"),
])
def test_credential_settings_are_unambiguous(env, message):
    from sidecars.common.config import ConfigError, Env
    from sidecars.elasticsearch.config import ElasticsearchSettings

    with pytest.raises(ConfigError) as err:
        ElasticsearchSettings.from_env(Env({"ES_HOST": "localhost", "ES_PORT": "9200", **env}))
    assert message in str(err.value) and "s3cr3t" not in str(err.value) and "\n" not in str(err.value)


class ApiKeyFront:
    """A real HTTP front that demands ``Authorization: ApiKey <key>`` (what an x-pack node checks) and
    forwards to the test node, which has no security module of its own. Paths starting with one of
    ``forbidden`` get 403, as for a key without that privilege."""

    def __init__(self, upstream: str, key: str, forbidden: tuple[str, ...] = ()):
        import http.server
        import threading
        import urllib.error
        import urllib.request

        self.seen: list[str] = []
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                auth = self.headers.get("Authorization", "")
                front.seen.append(auth)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                if auth != f"ApiKey {key}" or self.path.startswith(forbidden):
                    status = 401 if auth != f"ApiKey {key}" else 403
                    error = {"type": "security_exception", "reason": "unable to authenticate" if status == 401
                             else "action [indices:admin/resolve/index] is unauthorized"}
                    payload = json.dumps({"error": {**error, "root_cause": [error]}, "status": status}).encode()
                    headers = {"Content-Type": "application/json", "X-elastic-product": "Elasticsearch"}
                else:
                    req = urllib.request.Request(upstream + self.path, data=body, method=self.command, headers={
                        k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")})
                    try:
                        with urllib.request.urlopen(req, timeout=30) as resp:
                            status, headers, payload = resp.status, dict(resp.headers), resp.read()
                    except urllib.error.HTTPError as exc:
                        status, headers, payload = exc.code, dict(exc.headers), exc.read()
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_api_key_reaches_elasticsearch_as_the_apikey_header(es_node):
    """Through a front that also refuses `_resolve/index` (a key with `read` only): the tools still work,
    and system index names are still refused."""
    import base64

    encoded = base64.b64encode(b"VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw").decode()
    front = ApiKeyFront(es_node.url, encoded, forbidden=("/_resolve/",))
    try:
        for given in (encoded, "VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw"):  # `encoded`, or id:api_key
            env = {"ES_HOST": "127.0.0.1", "ES_PORT": str(front.port), "ES_API_KEY": given}
            with SidecarProcess("elasticsearch", env) as sidecar:
                assert ok(call(sidecar.url, "count", {"index": "books"}))["count"] >= 30
                assert "ES_ALLOW_SYSTEM_INDICES" in error_text(call(sidecar.url, "count", {"index": ".secret"}))
                assert sidecar.get("/health").json()["status"] == "ok"
                assert given not in sidecar.output() and encoded not in sidecar.output()
        assert front.seen and set(front.seen) == {f"ApiKey {encoded}"}
        wrong = base64.b64encode(b"id:wrong").decode()
        with SidecarProcess("elasticsearch", {"ES_HOST": "127.0.0.1", "ES_PORT": str(front.port),
                                              "ES_API_KEY": wrong}) as sidecar:
            result = call(sidecar.url, "count", {"index": "books"})
            assert result.is_error and "rejected the credentials" in error_text(result)
            assert wrong not in error_text(result)
    finally:
        front.close()
