"""The OpenSearch sidecar (``mcp-opensearch``: the Elasticsearch sidecar with ``ES_ENGINE=opensearch``)
against a real OpenSearch 2.19 node built from Maven Central jars (tests/backends/opensearch_node.py).

What a user of an OpenSearch pod gets: the same tools as on Elasticsearch (without ES|QL), read-only
by default, system indices refused, answers bounded, the bearer token required."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import es_env
from .helpers import SidecarProcess, call, calls, error_text, list_tools
from .test_elasticsearch import READ_TOOLS, SYSTEM_CALLS, WRITE_TOOLS, ok

pytestmark = pytest.mark.slow

#: The Elasticsearch refusals, without ES|QL (not offered on OpenSearch).
OS_SYSTEM_CALLS = [(tool, args) for tool, args in SYSTEM_CALLS if tool != "esql"]


@pytest.fixture(scope="module")
def os_system_indices(os_node):
    """What the security plugin's config index looks like to a query (a non-hidden dot index holding
    password hashes), a hidden index, and an innocent-looking alias onto the dot index."""
    os_node.request("PUT", "/.secret", {"settings": {"number_of_replicas": 0}})
    os_node.request("PUT", "/.secret/_doc/1?refresh=true", {"password_hash": "$2a$10$abc", "tag": "t1"})
    os_node.request("PUT", "/hidden-things", {"settings": {"number_of_replicas": 0, "index.hidden": True}})
    os_node.request("PUT", "/hidden-things/_doc/1?refresh=true", {"tag": "t1"})
    os_node.request("POST", "/_aliases", {"actions": [{"add": {"index": ".secret", "alias": "innocent"}}]})
    yield
    for index in (".secret", "hidden-things"):
        os_node.request("DELETE", f"/{index}")


def test_read_only_tools_without_esql(os_sidecar):
    tools = {t.name: t for t in list_tools(os_sidecar.url)}
    assert set(tools) == READ_TOOLS - {"esql"}
    assert all(t.annotations.read_only_hint is True for t in tools.values())
    assert call(os_sidecar.url, "index_document", {"index": "books", "document": {"title": "x"}}).is_error


def test_list_search_count_and_get_against_opensearch(os_sidecar):
    """Every call with a body was a 406 from OpenSearch with the 8.x client's media types, and every
    answer an UnsupportedProductError."""
    out = calls(os_sidecar.url, [
        ("list_indices", {"pattern": "boo*"}),
        ("get_mappings", {"index": "books"}),
        ("search", {"index": "library", "query": {"match": {"title": "redis"}}, "size": 3, "source": ["year"],
                    "sort": [{"year": "asc"}], "aggs": {"tags": {"terms": {"field": "tag"}}}}),
        ("count", {"index": "books", "query": {"term": {"tag": "t1"}}}),
        ("get_document", {"index": "books", "id": "7", "source": ["title"]}),
        ("get_document", {"index": "books", "id": "404"}),
        ("cluster_health", {"index": "books"}),
        ("get_shards", {"index": "books"}),
        ("list_aliases", {}),
    ])
    [books] = ok(out[0])["indices"]
    assert books["index"] == "books" and books["docs_count"] == 30 and books["health"] == "green"
    assert ok(out[1])["mappings"]["books"]["properties"]["tag"] == {"type": "keyword"}
    found = ok(out[2])
    assert found["total"] == 15 and [h["source"] for h in found["hits"]] == [{"year": 2001}, {"year": 2003},
                                                                            {"year": 2005}]
    assert sum(b["doc_count"] for b in found["aggregations"]["tags"]["buckets"]) == 15
    assert ok(out[3])["count"] == 10
    assert ok(out[4])["source"] == {"title": "book 7 about redis"}
    assert ok(out[5])["found"] is False
    assert ok(out[6])["status"] == "green"
    assert [(s["index"], s["state"]) for s in ok(out[7])["shards"]] == [("books", "STARTED")]
    assert {"alias": "library", "index": "books", "is_write_index": None} in ok(out[8])["aliases"]


def test_health_metrics_and_errors_name_opensearch(os_sidecar):
    body = os_sidecar.get("/health").json()
    assert body["status"] == "ok" and body["backend"] == "opensearch"
    missing = call(os_sidecar.url, "search", {"index": "nosuch"})
    assert missing.is_error and "OpenSearch error 404" in error_text(missing)
    assert 'mcp_backend_up{backend="opensearch"} 1.0' in os_sidecar.get("/metrics").text
    startup = next(line for line in os_sidecar.audit_lines() if line.get("event") == "startup")
    assert startup["backend"] == "opensearch" and startup["read_only"] is True


def test_token_required(os_sidecar):
    """Auth through the common layer: no token, no datastore."""
    refused = httpx.post(os_sidecar.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
                         headers={"Accept": "application/json, text/event-stream"}, timeout=10)
    assert refused.status_code == 401


@pytest.mark.parametrize("tool, args", OS_SYSTEM_CALLS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(OS_SYSTEM_CALLS)])
def test_system_indices_are_refused_in_every_tool(os_sidecar, os_system_indices, tool, args):
    result = call(os_sidecar.url, tool, args)
    text = error_text(result)
    assert result.is_error and "ES_ALLOW_SYSTEM_INDICES" in text and "system or hidden index" in text, text
    assert "$2a$10$" not in text


def test_wildcards_never_reach_system_or_hidden_indices(os_sidecar, os_system_indices):
    out = calls(os_sidecar.url, [
        ("list_indices", {}),
        ("search", {"index": "*", "size": 100, "query": {"term": {"tag": "t1"}}}),
        ("search", {"index": "_all", "size": 0, "aggs": {"i": {"terms": {"field": "_index"}}}}),
        ("count", {"index": "*", "query": {"term": {"tag": "t1"}}}),
        ("get_mappings", {"index": "*"}),
    ])
    hidden = {".secret", "hidden-things", "innocent"}
    assert not hidden & {r["index"] for r in ok(out[0])["indices"]}
    assert ok(out[1])["total"] == 10 and {h["index"] for h in ok(out[1])["hits"]} == {"books"}
    assert not hidden & {b["key"] for b in ok(out[2])["aggregations"]["i"]["buckets"]}
    assert ok(out[3])["count"] == 10
    assert not hidden & set(ok(out[4])["mappings"])


def test_writes_when_enabled_bounded_aggregations_and_answers(os_node, os_system_indices):
    env = es_env(os_node, MCP_READ_ONLY="false", MCP_MAX_ITEMS="5")
    with SidecarProcess("opensearch", env) as sidecar:
        assert set(t.name for t in list_tools(sidecar.url)) == (READ_TOOLS | WRITE_TOOLS) - {"esql"}
        out = calls(sidecar.url, [
            ("create_index", {"index": "notes", "settings": {"number_of_replicas": 0}}),
            ("index_document", {"index": "notes", "id": "n1", "document": {"text": "hello"}, "refresh": True}),
            ("delete_document", {"index": "notes", "id": "n1", "refresh": True}),
            ("index_document", {"index": ".secret", "id": "2", "document": {"x": 1}}),
            ("search", {"index": "books", "size": 0, "aggs": {"y": {"terms": {"field": "year", "size": 65_536}}}}),
            ("search", {"index": "books", "size": 0, "aggs": {"s": {"scripted_metric": {"map_script": "1"}}}}),
            ("search", {"index": "books", "size": 50}),
        ])
        assert ok(out[0])["result"] == "acknowledged" and ok(out[1])["result"] == "created"
        assert ok(out[2])["result"] == "deleted"
        assert out[3].is_error and "ES_ALLOW_SYSTEM_INDICES" in error_text(out[3])
        assert os_node.request("GET", "/.secret/_count")["count"] == 1
        years = ok(out[4])
        assert len(years["aggregations"]["y"]["buckets"]) == 5 and years["truncated"] is True
        assert years["aggregations"]["y"]["sum_other_doc_count"] == 25  # OpenSearch itself cut at 5
        assert out[5].is_error and "ES_ALLOW_SCRIPTED_METRIC" in error_text(out[5])
        assert len(ok(out[6])["hits"]) == 5 and ok(out[6])["truncated"] is True
    os_node.request("DELETE", "/notes")
    # What the sidecar reads at once is bounded too (transport.py): a 2 KiB read cap refuses a big answer.
    with SidecarProcess("opensearch", es_env(os_node, MCP_MAX_RESULT_BYTES="1024")) as sidecar:
        big = call(sidecar.url, "search", {"index": "books", "size": 0, "aggs": {"y": {
            "terms": {"field": "year", "size": 100}, "aggs": {"top": {"top_hits": {"size": 10}}}}}})
        assert big.is_error and "MCP_MAX_RESULT_BYTES" in error_text(big)
        page = ok(call(sidecar.url, "search", {"index": "books", "size": 30}))
        assert 1 <= len(page["hits"]) < 30 and page["truncated"] is True
        assert len(json.dumps(page)) < 4096


def test_the_elasticsearch_sidecar_on_opensearch_names_the_fix(os_node):
    """Pointed at OpenSearch in Elasticsearch mode (a pod labelled `backend: elasticsearch`), the
    sidecar says which setting makes it work instead of a bare product error."""
    with SidecarProcess("elasticsearch", es_env(os_node)) as sidecar:
        result = call(sidecar.url, "count", {"index": "books"})
        assert result.is_error and "ES_ENGINE=opensearch" in error_text(result)
        health = sidecar.get("/health")
        assert health.status_code == 503 and "backend: opensearch" in health.json()["last_error"]
    with SidecarProcess("elasticsearch", es_env(os_node, ES_ENGINE="opensearch")) as sidecar:
        assert ok(call(sidecar.url, "count", {"index": "books"}))["count"] == 30


def test_unknown_engine_fails_fast_with_one_line():
    entry = Path(sys.executable).parent / "mcp-opensearch"
    done = subprocess.run([str(entry)], env={"PATH": "/usr/bin:/bin", "ES_HOST": "localhost", "ES_PORT": "9200",
                                             "ES_ENGINE": "solr"}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == ("configuration error: ES_ENGINE must be one of elasticsearch, opensearch, "
                                   "got 'solr'")
