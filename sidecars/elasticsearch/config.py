"""Elasticsearch connection settings from the env the injector sets (ES_HOST, ES_PORT, credentials)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from sidecars.common.config import ConfigError, Env
from sidecars.common.tls import TlsSettings


@dataclass(frozen=True)
class ElasticsearchSettings:
    host: str
    port: int
    scheme: str = "http"
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    ca_file: str | None = None
    verify_certs: bool = True
    #: ES_TLS_SERVER_NAME: the name the certificate must carry (and SNI); unset: chain only (tls.py).
    tls_server_name: str | None = None
    #: ES_ALLOW_SYSTEM_INDICES: reach indices whose names start with '.' (refused by default; see guard.py).
    allow_system_indices: bool = False
    #: ES_ALLOW_SCRIPTED_METRIC: let `search` send scripted_metric aggregations (refused by default).
    allow_scripted_metric: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def tls_settings(self) -> TlsSettings:
        return TlsSettings(ca_file=self.ca_file, server_name=self.tls_server_name, verify=self.verify_certs,
                           host=self.host)

    @classmethod
    def from_env(cls, env: Env) -> "ElasticsearchSettings":
        scheme = (env.str("ES_SCHEME", "http") or "http").lower()
        if scheme not in ("http", "https"):
            raise ConfigError(f"ES_SCHEME must be http or https, got {scheme!r}")
        username, password, api_key = env.str("ES_USERNAME"), env.str("ES_PASSWORD"), env.str("ES_API_KEY")
        if api_key and (username or password):
            # Which identity would the sidecar use? Refuse rather than guess.
            raise ConfigError("ES_API_KEY and ES_USERNAME/ES_PASSWORD are both set: ambiguous, set only one")
        if password and not username:
            raise ConfigError("ES_PASSWORD is set but ES_USERNAME is not")
        if username and not password:
            raise ConfigError("ES_USERNAME is set but ES_PASSWORD is not")
        if api_key:
            api_key = encoded_api_key(api_key)
        return cls(
            host=env.str("ES_HOST", required=True),
            port=env.port("ES_PORT", required=True),
            scheme=scheme,
            username=username,
            password=password,
            api_key=api_key,
            ca_file=env.file("ES_CA_CERT"),
            verify_certs=env.bool("ES_VERIFY_CERTS", True),
            tls_server_name=env.str("ES_TLS_SERVER_NAME"),
            allow_system_indices=env.bool("ES_ALLOW_SYSTEM_INDICES", False),
            allow_scripted_metric=env.bool("ES_ALLOW_SCRIPTED_METRIC", False),
        )


def encoded_api_key(value: str) -> str:
    """The ``encoded`` form Elasticsearch sends in ``Authorization: ApiKey``. Accepts that form (what
    ``POST /_security/api_key`` returns as ``encoded``) or ``id:api_key``, which is encoded here."""
    if ":" in value:
        key_id, _, secret = value.partition(":")
        if not key_id or not secret:
            raise ConfigError("ES_API_KEY must be the `encoded` value of the API key, or id:api_key")
        return base64.b64encode(value.encode()).decode()
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        decoded = ""
    if ":" not in decoded:
        # Never echo the value: it is a credential.
        raise ConfigError("ES_API_KEY is not an API key: expected the `encoded` value (base64 of id:api_key) "
                          "or id:api_key")
    return value
