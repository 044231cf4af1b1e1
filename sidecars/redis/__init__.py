"""MCP sidecar for the Redis in the same pod."""
