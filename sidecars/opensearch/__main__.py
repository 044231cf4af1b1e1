"""``mcp-opensearch`` / ``python -m sidecars.opensearch``: the Elasticsearch sidecar speaking to OpenSearch
(same ES_* settings; ``ES_ENGINE`` still wins when set)."""

from sidecars.common.app import run
from sidecars.elasticsearch.engines import OPENSEARCH
from sidecars.elasticsearch.server import build


def main() -> None:
    run(lambda: build(default_engine=OPENSEARCH))


if __name__ == "__main__":
    main()
