"""The Elasticsearch sidecar against a real Elasticsearch 8 node (built from Maven Central jars)."""

from __future__ import annotations

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
