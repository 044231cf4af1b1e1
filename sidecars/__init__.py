"""The MCP sidecar servers injected next to Redis and Elasticsearch."""
