"""Assembles the Elasticsearch sidecar from env."""

from sidecars.common.app import Sidecar
from sidecars.common.config import Env, ServerSettings

from .backend import ElasticsearchBackend
from .config import ElasticsearchSettings
from .tools import register

INSTRUCTIONS = (
    "Tools for the Elasticsearch running next to this server. Searches return at most a bounded "
    "number of hits; truncated=true means results were cut, so narrow the query, use `source` "
    "filtering or aggregations. Write tools exist only when the operator disabled read-only mode."
)


def build(environ=None) -> Sidecar:
    env = Env(environ)
    settings = ServerSettings.from_env(env)
    backend = ElasticsearchBackend(ElasticsearchSettings.from_env(env), timeout=settings.backend_timeout)
    sidecar = Sidecar("mcp-elasticsearch", settings, backend, INSTRUCTIONS)
    register(sidecar)
    return sidecar
