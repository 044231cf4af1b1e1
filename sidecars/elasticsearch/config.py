"""Elasticsearch connection settings from the env the injector sets (ES_HOST, ES_PORT, credentials)."""

from __future__ import annotations

from dataclasses import dataclass

from sidecars.common.config import ConfigError, Env


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

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @classmethod
    def from_env(cls, env: Env) -> "ElasticsearchSettings":
        scheme = (env.str("ES_SCHEME", "http") or "http").lower()
        if scheme not in ("http", "https"):
            raise ConfigError(f"ES_SCHEME must be http or https, got {scheme!r}")
        username, password, api_key = env.str("ES_USERNAME"), env.str("ES_PASSWORD"), env.str("ES_API_KEY")
        if password and not username:
            raise ConfigError("ES_PASSWORD is set but ES_USERNAME is not")
        if username and not password:
            raise ConfigError("ES_USERNAME is set but ES_PASSWORD is not")
        if api_key and username:
            raise ConfigError("ES_API_KEY and ES_USERNAME/ES_PASSWORD are both set; use one")
        return cls(
            host=env.str("ES_HOST", required=True),
            port=env.port("ES_PORT", required=True),
            scheme=scheme,
            username=username,
            password=password,
            api_key=api_key,
            ca_file=env.file("ES_CA_CERT"),
            verify_certs=env.bool("ES_VERIFY_CERTS", True),
        )
