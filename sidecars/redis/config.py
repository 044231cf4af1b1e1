"""Redis connection settings from the env the injector sets (REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, …)."""

from __future__ import annotations

from dataclasses import dataclass

from sidecars.common.config import ConfigError, Env
from sidecars.common.tls import TlsSettings


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
    #: REDIS_TLS_SERVER_NAME: the name the server certificate must carry (and SNI); unset: chain only.
    tls_server_name: str | None = None
    max_connections: int = 32

    @property
    def tls_settings(self) -> TlsSettings:
        return TlsSettings(ca_file=self.tls_ca_file, cert_file=self.tls_cert_file, key_file=self.tls_key_file,
                           server_name=self.tls_server_name, verify=self.tls_verify, host=self.host)

    @classmethod
    def from_env(cls, env: Env) -> "RedisSettings":
        cert, key = env.file("REDIS_TLS_CERT_FILE"), env.file("REDIS_TLS_KEY_FILE")
        if key and not cert:
            # A key alone presents nothing (a certificate alone is fine: its PEM may hold the key too).
            raise ConfigError("REDIS_TLS_KEY_FILE is set but REDIS_TLS_CERT_FILE is not")
        return cls(
            host=env.str("REDIS_HOST", required=True),
            port=env.port("REDIS_PORT", required=True),
            password=env.str("REDIS_PASSWORD"),
            username=env.str("REDIS_USERNAME"),
            db=env.int("REDIS_DB", 0, minimum=0, maximum=100_000),
            tls=env.bool("REDIS_TLS", False),
            tls_ca_file=env.file("REDIS_TLS_CA_FILE"),
            tls_cert_file=cert,
            tls_key_file=key,
            tls_verify=env.bool("REDIS_TLS_VERIFY", True),
            tls_server_name=env.str("REDIS_TLS_SERVER_NAME"),
            max_connections=env.int("REDIS_MAX_CONNECTIONS", 32, minimum=1, maximum=1024) or 32,
        )
