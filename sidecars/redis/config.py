"""Redis connection settings from the env the injector sets (REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, …)."""

from __future__ import annotations

from dataclasses import dataclass

from sidecars.common.config import Env


@dataclass(frozen=True)
class RedisSettings:
    host: str
    port: int
    password: str | None = None
    username: str | None = None
    db: int = 0
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True
    max_connections: int = 32

    @classmethod
    def from_env(cls, env: Env) -> "RedisSettings":
        return cls(
            host=env.str("REDIS_HOST", required=True),
            port=env.port("REDIS_PORT", required=True),
            password=env.str("REDIS_PASSWORD"),
            username=env.str("REDIS_USERNAME"),
            db=env.int("REDIS_DB", 0, minimum=0, maximum=100_000),
            tls=env.bool("REDIS_TLS", False),
            tls_ca_file=env.file("REDIS_TLS_CA_FILE"),
            tls_cert_file=env.file("REDIS_TLS_CERT_FILE"),
            tls_key_file=env.file("REDIS_TLS_KEY_FILE"),
            tls_verify=env.bool("REDIS_TLS_VERIFY", True),
            max_connections=env.int("REDIS_MAX_CONNECTIONS", 32, minimum=1, maximum=1024) or 32,
        )
