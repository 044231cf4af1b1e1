"""The ``redis.asyncio`` client, its timeouts, and how its errors read to an MCP client.

The client itself never retries: a command that timed out may have run, and sending ``RPUSH`` again
would apply it twice. Read tools retry once on a connection error (``RedisBackend.bounded``), write
tools never. The pool checks a pooled connection before handing it out, so the first call after a
Redis restart gets a fresh connection either way. Each tool call has one deadline,
``MCP_BACKEND_TIMEOUT`` (``bounded``); waiting for a free pooled connection gives up after half of it and says the sidecar is busy.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import Any, Callable, Mapping

from redis.asyncio.client import Redis
from redis.asyncio.connection import BlockingConnectionPool, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConnectionError as RedisConnectionError,
    RedisError,
    ResponseError,
    TimeoutError as RedisTimeoutError,
)

from sidecars.common.config import ConfigError, Limits
from sidecars.common.tls import announce, client_context, describe_tls_failure

from .config import RedisSettings
from .protocol import capped_parser

#: Bytes of Redis strings one reply may hold in memory; further elements keep only their length.
REPLY_CAP = 8 * 1024 * 1024


class PoolBusy(RedisError):
    """Every pooled connection is in use (slow commands, many clients): not an unreachable Redis."""


class WriteOutcomeUnknown(RedisError):
    """A write whose reply never came (timeout, connection lost while reading): it may have run."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class BusyAwarePool(BlockingConnectionPool):
    async def get_connection(self, *args, **options):
        try:
            return await super().get_connection(*args, **options)
        except RedisConnectionError as exc:
            if str(exc) == "No connection available.":
                raise PoolBusy(f"all {self.max_connections} connection(s) to Redis are in use") from None
            raise


class DirectWrites:
    """Writes a command without redis-py's per-write ``asyncio.wait_for``, which wraps every write in
    a new Task (the largest cost of a small call after the round trip). Every use of the connection
    is already under one deadline: the tool call's (``RedisBackend.bounded``) or the health check's;
    a write cancelled by it disconnects the connection (redis-py's own ``except BaseException``), so
    no reply can be read by the wrong command. Reads keep ``socket_timeout``."""

    async def send_packed_command(self, command, check_health: bool = True) -> None:
        timeout, self.socket_timeout = self.socket_timeout, None
        try:
            await super().send_packed_command(command, check_health)
        finally:
            if self.socket_timeout is None:  # unless redis-py changed it meanwhile
                self.socket_timeout = timeout


class PlainConnection(DirectWrites, Connection):
    pass


class TlsConnection(DirectWrites, SSLConnection):
    """An SSLConnection on our own context (sidecars/common/tls.py): the chain is always verified,
    the hostname only against REDIS_TLS_SERVER_NAME, which is also sent as SNI."""

    def __init__(self, *, tls_context: ssl.SSLContext, **kwargs):
        super().__init__(**kwargs)
        self.tls_context = tls_context

    def _connection_arguments(self) -> Mapping:
        return {**super()._connection_arguments(), "ssl": self.tls_context}


def redis_tls_context(settings: RedisSettings) -> ssl.SSLContext:
    """The client context, with the startup line that states the policy; unusable files exit 2."""
    try:
        context = client_context(settings.tls_settings)
    except (ssl.SSLError, OSError) as exc:
        names = "REDIS_TLS_CERT_FILE/REDIS_TLS_KEY_FILE" if settings.tls_cert_file else "REDIS_TLS_CA_FILE"
        raise ConfigError(f"{names}: cannot load the PEM file(s): {str(exc)[:200]}") from None
    announce("redis", settings.tls_settings, verify_setting="REDIS_TLS_VERIFY",
             server_name_setting="REDIS_TLS_SERVER_NAME", ca_setting="REDIS_TLS_CA_FILE")
    return context


class RedisBackend:
    name = "redis"

    def __init__(self, settings: RedisSettings, timeout: float, limits: Limits | None = None):
        self.settings = settings
        self.timeout = timeout
        limits = limits or Limits()
        # GETRANGE asks for MCP_MAX_VALUE_BYTES + 1; INFO, JSON.GET may be up to a whole result.
        element_cap = max(limits.max_value_bytes + 1, limits.max_result_bytes)
        kwargs: dict = {"connection_class": PlainConnection}
        if settings.tls:
            kwargs.update(connection_class=TlsConnection, tls_context=redis_tls_context(settings))
        pool = BusyAwarePool(
            host=settings.host,
            port=settings.port,
            db=settings.db,
            username=settings.username,
            password=settings.password,
            socket_timeout=timeout,
            socket_connect_timeout=min(timeout, 2.0),
            retry=Retry(NoBackoff(), 0),
            max_connections=settings.max_connections,
            timeout=timeout / 2,
            client_name="mcp-sidecar",
            parser_class=capped_parser(element_cap, max(REPLY_CAP, element_cap), head_cap=limits.max_value_bytes + 1),
            **kwargs,
        )
        self.client = Redis.from_pool(pool)

    async def ping(self) -> None:
        await self.client.ping()

    def bounded(self, fn: Callable, *, write: bool) -> Callable:
        """The policy of every tool call: one deadline (MCP_BACKEND_TIMEOUT) for the whole call; one
        retry on a broken connection for reads only; a write whose reply never came says so."""
        timeout = self.timeout

        @functools.wraps(fn)
        async def call(**kwargs: Any) -> Any:
            try:
                async with asyncio.timeout(timeout):
                    if write:
                        return await fn(**kwargs)
                    try:
                        return await fn(**kwargs)
                    except RedisConnectionError:
                        return await fn(**kwargs)
            except (TimeoutError, RedisTimeoutError, RedisConnectionError) as exc:
                # A reply that never came (timeout, connection lost while reading): the command may have run.
                if write and (not isinstance(exc, RedisConnectionError) or "reading" in str(exc)):
                    raise WriteOutcomeUnknown(exc) from exc
                raise
        return call

    def describe_error(self, exc: BaseException) -> tuple[str, str | None]:
        where = f"Redis at {self.settings.host}:{self.settings.port}"
        if isinstance(exc, WriteOutcomeUnknown):
            message, kind = self.describe_error(exc.cause)
            return (f"{message}. The write was sent once and not retried: it may or may not have been applied; "
                    "check before repeating it"), kind
        if isinstance(exc, AuthenticationError):
            return f"{where} rejected the credentials (check REDIS_PASSWORD / REDIS_USERNAME)", "auth"
        if isinstance(exc, AuthorizationError):
            return f"{where} refused the command: {exc}", None
        if isinstance(exc, PoolBusy):
            return (f"Redis sidecar busy: {exc}; try again shortly (REDIS_MAX_CONNECTIONS raises the limit)",
                    None)
        if isinstance(exc, (RedisTimeoutError, asyncio.TimeoutError)):
            return f"{where} did not answer within MCP_BACKEND_TIMEOUT ({self.timeout:g}s)", "timeout"
        if isinstance(exc, RedisConnectionError):
            if self.settings.tls:
                tls = describe_tls_failure(exc, where, ca_setting="REDIS_TLS_CA_FILE",
                                           server_name_setting="REDIS_TLS_SERVER_NAME",
                                           client_cert_setting="REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE")
                if tls:
                    return tls, "tls"
                if not self.settings.tls_cert_file and _dropped(exc):
                    # TLS 1.3: a server that requires client certificates checks them after the
                    # handshake; its alert often loses the race with the reset that follows it.
                    return (f"{where} is unreachable: {exc} (a Redis with tls-auth-clients closes connections "
                            "without a client certificate it accepts: set REDIS_TLS_CERT_FILE and "
                            "REDIS_TLS_KEY_FILE)"), "connection"
            elif _dropped(exc):
                # A TLS-only port (`--port 0 --tls-port N`) drops a plaintext client without a word.
                return (f"{where} is unreachable: {exc} (if this Redis serves TLS only, set REDIS_TLS=true "
                        "and REDIS_TLS_CA_FILE)"), "connection"
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


def _dropped(exc: BaseException) -> bool:
    """The server closed or reset the connection right away (not a refused or timed-out one)."""
    text = str(exc).lower()
    return "closed by server" in text or "reset by peer" in text
