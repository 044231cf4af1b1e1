"""Fixtures: real redis-server processes and sidecar processes, all stopped after use."""

from __future__ import annotations

import json

import pytest

from tests.backends.redis_server import RedisServer

from .helpers import SidecarProcess

PASSWORD = "s3cret-pa55"


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_with_password():
    with RedisServer(password=PASSWORD) as server:
        yield server


def redis_env(server: RedisServer, **extra: str) -> dict[str, str]:
    env = {"REDIS_HOST": server.host, "REDIS_PORT": str(server.port)}
    if server.password:
        env["REDIS_PASSWORD"] = server.password
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def redis_sidecar(redis_server):
    """Default settings: read-only, no token."""
    with SidecarProcess("redis", redis_env(redis_server)) as proc:
        yield proc


@pytest.fixture(scope="session")
def redis_sidecar_rw(redis_with_password):
    """Writes enabled, password-protected Redis, small caps to exercise truncation."""
    env = redis_env(redis_with_password, MCP_READ_ONLY="false", MCP_MAX_ITEMS="20", MCP_MAX_VALUE_BYTES="1024")
    with SidecarProcess("redis", env) as proc:
        yield proc


# ----------------------------------------------------------------------------- Elasticsearch
BOOKS = [{"title": f"book {i} about {'redis' if i % 2 else 'search'}", "year": 2000 + i, "tag": f"t{i % 3}"}
         for i in range(30)]


@pytest.fixture(scope="session")
def es_node():
    """A real Elasticsearch 8 node (see tests/backends/elasticsearch_node.py) with a `books` index."""
    from tests.backends.elasticsearch_node import ElasticsearchNode

    with ElasticsearchNode() as node:
        node.request("PUT", "/books", {
            "settings": {"number_of_replicas": 0},
            "mappings": {"properties": {"title": {"type": "text"}, "year": {"type": "integer"},
                                        "tag": {"type": "keyword"}, "blob": {"type": "text", "index": False}}},
        })
        bulk = "".join(
            '{"index":{"_index":"books","_id":"%d"}}\n%s\n' % (i, __import__("json").dumps(doc))
            for i, doc in enumerate(BOOKS)
        )
        node.request("POST", "/_bulk?refresh=true", bulk)
        node.request("POST", "/_aliases", {"actions": [{"add": {"index": "books", "alias": "library"}}]})
        yield node


def es_env(node, **extra: str) -> dict[str, str]:
    return {"ES_HOST": node.host, "ES_PORT": str(node.port), **extra}


@pytest.fixture(scope="session")
def es_sidecar(es_node):
    with SidecarProcess("elasticsearch", es_env(es_node)) as proc:
        yield proc


@pytest.fixture(scope="session")
def es_sidecar_rw(es_node):
    env = es_env(es_node, MCP_READ_ONLY="false", MCP_MAX_ITEMS="5", MCP_MAX_VALUE_BYTES="1024")
    with SidecarProcess("elasticsearch", env) as proc:
        yield proc


# ----------------------------------------------------------------------------- OpenSearch
@pytest.fixture(scope="session")
def os_node():
    """A real OpenSearch 2.19 node (see tests/backends/opensearch_node.py) with the same `books` index."""
    from tests.backends.opensearch_node import OpenSearchNode

    with OpenSearchNode() as node:
        node.request("PUT", "/books", {
            "settings": {"number_of_replicas": 0},
            "mappings": {"properties": {"title": {"type": "text"}, "year": {"type": "integer"},
                                        "tag": {"type": "keyword"}, "blob": {"type": "text", "index": False}}},
        })
        bulk = "".join('{"index":{"_index":"books","_id":"%d"}}\n%s\n' % (i, json.dumps(doc))
                       for i, doc in enumerate(BOOKS))
        node.request("POST", "/_bulk?refresh=true", bulk)
        node.request("POST", "/_aliases", {"actions": [{"add": {"index": "books", "alias": "library"}}]})
        yield node


@pytest.fixture(scope="session")
def os_sidecar(os_node):
    """``python -m sidecars.opensearch`` (the ``mcp-opensearch`` entry point) with default settings."""
    with SidecarProcess("opensearch", es_env(os_node)) as proc:
        yield proc
