"""The Elasticsearch sidecar, which also serves OpenSearch (``ES_ENGINE=opensearch``, engines.py);
see sidecars/common/spec.py for the pattern."""

from sidecars.common.spec import SidecarSpec

from .backend import ElasticsearchBackend
from .config import ElasticsearchSettings
from .tools import register

INSTRUCTIONS = (
    "Tools for the {engine} running next to this server. Searches return at most a bounded "
    "number of hits; truncated=true means results were cut, so narrow the query, use `source` "
    "filtering or aggregations. Write tools exist only when the operator disabled read-only mode."
)

SIDECAR = SidecarSpec(
    name="elasticsearch",
    settings=ElasticsearchSettings,
    connect=lambda es, server: ElasticsearchBackend(es, timeout=server.backend_timeout,
                                                    max_result_bytes=server.limits.max_result_bytes),
    tools=register,
    instructions=lambda backend: INSTRUCTIONS.format(engine=backend.engine.title),
)
build = SIDECAR.build
