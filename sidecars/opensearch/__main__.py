"""``mcp-opensearch`` / ``python -m sidecars.opensearch``: the Elasticsearch sidecar speaking to OpenSearch
(same ES_* settings; ``ES_ENGINE`` still wins when set)."""

from dataclasses import replace

from sidecars.elasticsearch.server import SIDECAR as ELASTICSEARCH

SIDECAR = replace(ELASTICSEARCH.with_defaults(ES_ENGINE="opensearch"), name="opensearch")


def main() -> None:
    SIDECAR.main()


if __name__ == "__main__":
    main()
