"""MCP sidecar for the Redis in the same pod."""

from sidecars.common.lean_imports import defer_package_init

# redis-py's package __init__ files import the sync client, cluster and sentinel clients this
# sidecar never runs; the modules it uses import directly (see lean_imports.py).
defer_package_init("redis")
defer_package_init("redis.asyncio")
