"""Redis connection settings from the env the injector sets (REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, …)."""

from __future__ import annotations

from pydantic import model_validator

from sidecars.common.config import Bool, ConfigError, EnvSettings, FilePath, IntBetween, Port, env
from sidecars.common.tls import TlsSettings


class RedisSettings(EnvSettings):
    host: str = env("REDIS_HOST")
    port: Port = env("REDIS_PORT")
    password: str | None = env("REDIS_PASSWORD", None, repr=False)
    username: str | None = env("REDIS_USERNAME", None)
    db: IntBetween(0, 100_000) = env("REDIS_DB", 0)
    tls: Bool = env("REDIS_TLS", False)
    tls_ca_file: FilePath = env("REDIS_TLS_CA_FILE", None)
    tls_cert_file: FilePath = env("REDIS_TLS_CERT_FILE", None, "client certificate (its PEM may hold the key too)")
    tls_key_file: FilePath = env("REDIS_TLS_KEY_FILE", None)
    tls_verify: Bool = env("REDIS_TLS_VERIFY", True)
    #: The name the server certificate must carry (and SNI); unset: chain only.
    tls_server_name: str | None = env("REDIS_TLS_SERVER_NAME", None)
    max_connections: IntBetween(1, 1024) = env("REDIS_MAX_CONNECTIONS", 32)

    @model_validator(mode="after")
    def _key_needs_cert(self) -> "RedisSettings":
        if self.tls_key_file and not self.tls_cert_file:
            # A key alone presents nothing (a certificate alone is fine: its PEM may hold the key too).
            raise ConfigError("REDIS_TLS_KEY_FILE is set but REDIS_TLS_CERT_FILE is not")
        return self

    @property
    def tls_settings(self) -> TlsSettings:
        return TlsSettings(ca_file=self.tls_ca_file, cert_file=self.tls_cert_file, key_file=self.tls_key_file,
                           server_name=self.tls_server_name, verify=self.tls_verify, host=self.host)
