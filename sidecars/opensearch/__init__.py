"""The OpenSearch sidecar: the Elasticsearch sidecar with ``ES_ENGINE=opensearch``
(see sidecars/elasticsearch/engines.py)."""
