"""Typed results of the Elasticsearch tools; each becomes the tool's MCP ``outputSchema``."""

from typing import Any

from pydantic import BaseModel, Field


class IndexInfo(BaseModel):
    index: str
    health: str | None = None
    status: str | None = None
    docs_count: int | None = None
    store_size: str | None = None
    primaries: int | None = None
    replicas: int | None = None


class Indices(BaseModel):
    indices: list[IndexInfo]
    truncated: bool = False


class Mappings(BaseModel):
    mappings: dict[str, Any] = Field(description="index name → its mappings")
    truncated: bool = False


class Hit(BaseModel):
    index: str
    id: str
    score: float | None = None
    source: dict[str, Any] | None = None


class SearchResult(BaseModel):
    total: int
    total_relation: str = Field(description="eq, or gte when the total is a lower bound")
    hits: list[Hit]
    aggregations: dict[str, Any] | None = None
    took_ms: int
    timed_out: bool
    truncated: bool = Field(False, description="hits or documents were cut to the sidecar's limits")


class EsqlColumn(BaseModel):
    name: str
    type: str


class EsqlResult(BaseModel):
    columns: list[EsqlColumn]
    rows: list[list[Any]]
    truncated: bool = False


class CountResult(BaseModel):
    index: str
    count: int


class Document(BaseModel):
    index: str
    id: str
    found: bool
    version: int | None = None
    source: dict[str, Any] | None = None
    truncated: bool = False


class ClusterHealth(BaseModel):
    cluster_name: str
    status: str
    number_of_nodes: int
    active_shards: int
    unassigned_shards: int
    active_shards_percent: float
    timed_out: bool


class ShardInfo(BaseModel):
    index: str
    shard: int
    prirep: str = Field(description="p (primary) or r (replica)")
    state: str
    docs: int | None = None
    store: str | None = None
    node: str | None = None


class Shards(BaseModel):
    shards: list[ShardInfo]
    truncated: bool = False


class Alias(BaseModel):
    alias: str
    index: str
    is_write_index: bool | None = None


class Aliases(BaseModel):
    aliases: list[Alias]
    truncated: bool = False


class WriteResult(BaseModel):
    index: str
    id: str | None = None
    result: str = Field(description="created, updated, deleted, not_found or acknowledged")
    version: int | None = None
