"""The ``redis.asyncio`` client, its timeouts, and how its errors read to an MCP client.

One reconnect attempt per command (no backoff) makes the first call after a Redis restart succeed
on a fresh connection, while a Redis that is really down fails fast instead of stalling callers.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConnectionError as RedisConnectionError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from .config import RedisSettings

MAX_CONNECTIONS = 32


class RedisBackend:
    name = "redis"

    def __init__(self, settings: RedisSettings, timeout: float):
        self.settings = settings
        kwargs: dict = {}
        if settings.tls:
            kwargs.update(
                connection_class=aioredis.SSLConnection,
                ssl_ca_certs=settings.tls_ca_file,
                ssl_certfile=settings.tls_cert_file,
                ssl_keyfile=settings.tls_key_file,
                ssl_cert_reqs="required" if settings.tls_verify else "none",
                ssl_check_hostname=settings.tls_verify,
            )
        pool = aioredis.BlockingConnectionPool(
            host=settings.host,
            port=settings.port,
            db=settings.db,
            username=settings.username,
            password=settings.password,
            socket_timeout=timeout,
            socket_connect_timeout=min(timeout, 2.0),
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            client_name="mcp-sidecar",
            **kwargs,
        )
        self.client = aioredis.Redis.from_pool(pool)

    async def ping(self) -> None:
        await self.client.ping()

    def describe_error(self, exc: BaseException) -> tuple[str, str | None]:
        where = f"Redis at {self.settings.host}:{self.settings.port}"
        if isinstance(exc, AuthenticationError):
            return f"{where} rejected the credentials (check REDIS_PASSWORD / REDIS_USERNAME)", "auth"
        if isinstance(exc, AuthorizationError):
            return f"{where} refused the command: {exc}", None
        if isinstance(exc, RedisTimeoutError):
            return f"{where} did not answer in time: {exc}", "timeout"
        if isinstance(exc, RedisConnectionError):
            return f"{where} is unreachable: {exc}", "connection"
        if isinstance(exc, ResponseError):
            text = str(exc)
            if "unknown command" in text.lower() and "json." in text.lower():
                return "The RedisJSON module is not loaded on this Redis server (JSON tools need it)", None
            if "NOAUTH" in text:
                return f"{where} requires a password (set REDIS_PASSWORD)", "auth"
            return f"Redis error: {text}", None
        return f"{type(exc).__name__}: {exc}", None

    async def close(self) -> None:
        await self.client.aclose()
