"""MCP sidecar for the Elasticsearch in the same pod."""
