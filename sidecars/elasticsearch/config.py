"""Elasticsearch connection settings from the env the injector sets (ES_HOST, ES_PORT, credentials)."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, model_validator

from sidecars.common.config import Bool, ConfigError, EnvSettings, FilePath, Port, choice, env
from sidecars.common.tls import TlsSettings

from .engines import ENGINE_ENV, ENGINES, Engine


def encoded_api_key(value: str | None) -> str | None:
    """The ``encoded`` form Elasticsearch sends in ``Authorization: ApiKey``. Accepts that form (what
    ``POST /_security/api_key`` returns as ``encoded``) or ``id:api_key``, which is encoded here."""
    if value is None:
        return None
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


class ElasticsearchSettings(EnvSettings):
    #: Which engine speaks at ES_HOST (engines.py); the opensearch entry point defaults it to opensearch.
    engine_name: Annotated[Literal[tuple(ENGINES)], choice(ENGINES, said=f"one of {', '.join(ENGINES)}", cut=40)] = env(
        ENGINE_ENV, "elasticsearch")
    scheme: Annotated[Literal["http", "https"], choice(("http", "https"))] = env("ES_SCHEME", "http")
    host: str = env("ES_HOST")
    port: Port = env("ES_PORT")
    username: str | None = env("ES_USERNAME", None)
    password: str | None = env("ES_PASSWORD", None, repr=False)
    api_key: Annotated[str | None, AfterValidator(encoded_api_key)] = env(
        "ES_API_KEY", None, "the `encoded` API key, or id:api_key", repr=False)
    ca_file: FilePath = env("ES_CA_CERT", None)
    verify_certs: Bool = env("ES_VERIFY_CERTS", True)
    #: The name the certificate must carry (and SNI); unset: chain only (tls.py).
    tls_server_name: str | None = env("ES_TLS_SERVER_NAME", None)
    #: Reach indices whose names start with '.' (refused by default; see guard.py).
    allow_system_indices: Bool = env("ES_ALLOW_SYSTEM_INDICES", False)
    #: Let `search` send scripted_metric aggregations (refused by default).
    allow_scripted_metric: Bool = env("ES_ALLOW_SCRIPTED_METRIC", False)

    @model_validator(mode="before")
    @classmethod
    def _one_identity(cls, data: Any) -> Any:
        """Which identity would the sidecar use? Refuse rather than guess (checked before the key's form)."""
        if isinstance(data, dict):
            def given(alias: str, name: str) -> bool:
                return bool(data.get(alias) or data.get(name))
            username, password = given("ES_USERNAME", "username"), given("ES_PASSWORD", "password")
            if given("ES_API_KEY", "api_key") and (username or password):
                raise ConfigError("ES_API_KEY and ES_USERNAME/ES_PASSWORD are both set: ambiguous, set only one")
            if password and not username:
                raise ConfigError("ES_PASSWORD is set but ES_USERNAME is not")
            if username and not password:
                raise ConfigError("ES_USERNAME is set but ES_PASSWORD is not")
        return data

    @property
    def engine(self) -> Engine:
        return ENGINES[self.engine_name]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def tls_settings(self) -> TlsSettings:
        return TlsSettings(ca_file=self.ca_file, server_name=self.tls_server_name, verify=self.verify_certs,
                           host=self.host)

    def warnings(self) -> list[tuple[str, str]]:
        loosened = [("ES_ALLOW_SYSTEM_INDICES", self.allow_system_indices,
                     "system and hidden indices (names starting with '.') are reachable through this sidecar"),
                    ("ES_ALLOW_SCRIPTED_METRIC", self.allow_scripted_metric,
                     "scripted_metric aggregations are sent to the datastore (unbounded result size)")]
        return [(f"{name}=true", why) for name, on, why in loosened if on]
