"""Which search engine the sidecar speaks to: Elasticsearch, or OpenSearch through the same code.

OpenSearch serves the REST API Elasticsearch 7.10 had (``_search``, ``_count``, ``_cat``,
``_mapping``, ``_resolve/index``...), which is all the tools use, so one server serves both: the
same tools, the same system-index guard (guard.py), the same bounded reads (transport.py). What
differs is small and lives here:

- the wire: the 8.x client sends ``application/vnd.elasticsearch+json; compatible-with=8``, which
  OpenSearch refuses with 406 on every request with a body; the OpenSearch node sends the plain
  media types instead (``opensearch_node`` in transport.py);
- the client's product check (``UnsupportedProductError`` when an answer lacks
  ``X-Elastic-Product: Elasticsearch``): it guards compatibility, not security, and the node marks
  OpenSearch's answers as checked;
- ES|QL exists only in Elasticsearch: the ``esql`` tool is not offered on OpenSearch;
- names: the ``backend`` label of /health and the metrics, and the engine's name in messages.

A further engine that speaks this API (another fork, a managed service) is one more ``Engine`` here.
``ES_ENGINE`` selects it; the ``opensearch`` backend of the injector sets ``ES_ENGINE=opensearch``.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINE_ENV = "ES_ENGINE"


@dataclass(frozen=True)
class Engine:
    #: The ``backend`` of /health, the metrics label and the audit log.
    name: str
    #: How messages name it.
    title: str
    #: Send plain ``application/json`` and accept answers without ``X-Elastic-Product`` (not Elastic).
    plain_wire: bool
    #: The ``esql`` tool is offered.
    esql: bool


ELASTICSEARCH = Engine(name="elasticsearch", title="Elasticsearch", plain_wire=False, esql=True)
OPENSEARCH = Engine(name="opensearch", title="OpenSearch", plain_wire=True, esql=False)
ENGINES = {e.name: e for e in (ELASTICSEARCH, OPENSEARCH)}

