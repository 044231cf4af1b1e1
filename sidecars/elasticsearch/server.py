"""Assembles the Elasticsearch (or OpenSearch, ``ES_ENGINE=opensearch``) sidecar from env."""

import json
import time

from sidecars.common.app import Sidecar
from sidecars.common.config import Env, ServerSettings

from .backend import ElasticsearchBackend
from .config import ElasticsearchSettings
from .engines import ELASTICSEARCH, Engine, engine_from_env
from .tools import register

INSTRUCTIONS = (
    "Tools for the {engine} running next to this server. Searches return at most a bounded "
    "number of hits; truncated=true means results were cut, so narrow the query, use `source` "
    "filtering or aggregations. Write tools exist only when the operator disabled read-only mode."
)


WARNINGS = {
    "ES_ALLOW_SYSTEM_INDICES": "system and hidden indices (names starting with '.') are reachable through this sidecar",
    "ES_ALLOW_SCRIPTED_METRIC": "scripted_metric aggregations are sent to the datastore (unbounded result size)",
}


def build(environ=None, default_engine: Engine = ELASTICSEARCH) -> Sidecar:
    env = Env(environ)
    settings = ServerSettings.from_env(env)
    engine = engine_from_env(env, default_engine)
    es_settings = ElasticsearchSettings.from_env(env)
    backend = ElasticsearchBackend(es_settings, timeout=settings.backend_timeout,
                                   max_result_bytes=settings.limits.max_result_bytes, engine=engine)
    sidecar = Sidecar(f"mcp-{engine.name}", settings, backend, INSTRUCTIONS.format(engine=engine.title))
    register(sidecar)
    for name, on in (("ES_ALLOW_SYSTEM_INDICES", es_settings.allow_system_indices),
                     ("ES_ALLOW_SCRIPTED_METRIC", es_settings.allow_scripted_metric)):
        if on:
            # Printed before the audit log is configured, and whatever MCP_LOG_LEVEL says: a loosened
            # default must show in `kubectl logs`.
            print(json.dumps({"ts": round(time.time(), 3), "event": "config_warning", "setting": f"{name}=true",
                              "message": WARNINGS[name]}, separators=(",", ":")), flush=True)
    return sidecar
