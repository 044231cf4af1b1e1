"""Typed results of the Redis tools; each becomes the tool's MCP ``outputSchema``.

Every collection result carries ``truncated``: true means the sidecar cut it (see MCP_MAX_ITEMS,
MCP_MAX_VALUE_BYTES) and the client should narrow its request.
"""

from typing import Any

from pydantic import BaseModel, Field


class StringValue(BaseModel):
    key: str
    exists: bool
    value: str | None = Field(description="UTF-8 text; undecodable bytes appear as \\x escapes")
    length: int = Field(description="Full length of the stored value in bytes")
    truncated: bool = False


class MultiValue(BaseModel):
    values: list[StringValue]
    truncated: bool = False


class Written(BaseModel):
    ok: bool
    detail: str = ""


class Count(BaseModel):
    key: str | None = None
    count: int


class KeyList(BaseModel):
    keys: list[str]
    cursor: int = Field(description="Pass back as `cursor` to continue; 0 means the scan is complete")
    truncated: bool = False


class KeyType(BaseModel):
    key: str
    type: str = Field(description="string, list, set, zset, hash, stream, ReJSON-RL … or none")


class KeyTTL(BaseModel):
    key: str
    ttl_seconds: int = Field(description="-1: no expiry, -2: key does not exist")


class HashValue(BaseModel):
    key: str
    fields: dict[str, str | None] = Field(description="null: the field is larger than MCP_MAX_VALUE_BYTES")
    length: int
    truncated: bool = False


class FieldValue(BaseModel):
    key: str
    field: str
    value: str | None
    truncated: bool = False


class ListValue(BaseModel):
    key: str
    items: list[str]
    length: int
    truncated: bool = False


class Popped(BaseModel):
    key: str
    items: list[str]


class Membership(BaseModel):
    key: str
    member: str
    is_member: bool


class ScoredMember(BaseModel):
    member: str
    score: float


class SortedSetValue(BaseModel):
    key: str
    members: list[ScoredMember]
    length: int
    truncated: bool = False


class Score(BaseModel):
    key: str
    member: str
    score: float | None


class StreamEntry(BaseModel):
    id: str
    fields: dict[str, str]


class StreamEntries(BaseModel):
    key: str
    entries: list[StreamEntry]
    truncated: bool = False


class StreamGroup(BaseModel):
    name: str
    consumers: int
    pending: int
    last_delivered_id: str


class StreamGroups(BaseModel):
    key: str
    groups: list[StreamGroup]


class EntryId(BaseModel):
    key: str
    id: str


class Info(BaseModel):
    section: str
    info: dict[str, Any]
    truncated: bool = False


class MemoryUsage(BaseModel):
    key: str
    bytes: int | None = Field(description="null when the key does not exist")


class SlowlogEntry(BaseModel):
    id: int
    start_time: int
    duration_us: int
    command: str
    client_address: str = ""


class Slowlog(BaseModel):
    entries: list[SlowlogEntry]
    truncated: bool = False


class JsonValue(BaseModel):
    key: str
    path: str
    value: Any = None
    exists: bool
    truncated: bool = False


class Channels(BaseModel):
    channels: list[str]
    truncated: bool = False


class Published(BaseModel):
    channel: str
    receivers: int
