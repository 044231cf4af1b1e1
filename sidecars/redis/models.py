"""Typed results of the Redis tools; each becomes the tool's MCP ``outputSchema``.

Keys, values, fields and members are :data:`~.encoding.Data` / :data:`~.encoding.Element`: a string
for UTF-8 text, ``{"base64": ...}`` otherwise, ``{"length", "truncated", "text"|"base64"}`` for an
element cut at MCP_MAX_VALUE_BYTES (see encoding.py).

Every collection result carries ``truncated``: true means the sidecar cut it (MCP_MAX_ITEMS,
MCP_MAX_VALUE_BYTES, MCP_MAX_RESULT_BYTES) and says where to continue (``next_start``, ``cursor``,
``next_start_id``) when the rest can be read by paging.
"""

from typing import Any

from pydantic import BaseModel, Field

from .encoding import Data, Element, Encoded, Cut  # noqa: F401 - re-exported for the tools


class StringValue(BaseModel):
    key: Element
    exists: bool
    value: Data | None = Field(description="UTF-8 text, or {\"base64\"} for bytes that are not UTF-8; "
                                           "at most MCP_MAX_VALUE_BYTES (see truncated)")
    length: int = Field(description="Full length of the stored value in bytes")
    truncated: bool = False


class MultiValue(BaseModel):
    values: list[StringValue] = Field(description="One per key, in order; when truncated, the first ones only: "
                                                  "ask again for the keys after the last")
    truncated: bool = False


class Written(BaseModel):
    ok: bool
    detail: str = ""


class Count(BaseModel):
    key: Element | None = None
    count: int


class KeyList(BaseModel):
    keys: list[Element]
    cursor: int = Field(description="Pass back as `cursor` to continue; 0 means the scan is complete")
    truncated: bool = False


class KeyType(BaseModel):
    key: Element
    type: str = Field(description="string, list, set, zset, hash, stream, ReJSON-RL … or none")


class KeyTTL(BaseModel):
    key: Element
    ttl_seconds: int = Field(description="-1: no expiry, -2: key does not exist")


class HashValue(BaseModel):
    key: Element
    fields: dict[str, Element] = Field(description="fields whose names are UTF-8 text up to MCP_MAX_VALUE_BYTES")
    binary_fields: list["FieldPair"] = Field(default_factory=list,
                                             description="fields whose names are not UTF-8 text or are cut")
    length: int
    truncated: bool = False
    cursor: int = Field(0, description="when truncated: pass back as `cursor` for more fields (HSCAN order; a "
                                       "field may repeat); 0: nothing left")


class FieldPair(BaseModel):
    field: Element
    value: Element


class FieldValue(BaseModel):
    key: Element
    field: Element
    value: Data | None = Field(description="null when the field does not exist or is larger than "
                                           "MCP_MAX_VALUE_BYTES (see length)")
    length: int = Field(0, description="length of the value in bytes")
    truncated: bool = False


class ListValue(BaseModel):
    key: Element
    items: list[Element]
    length: int
    truncated: bool = False
    next_start: int | None = Field(None, description="lists: when truncated, pass as `start` to read on")
    cursor: int | None = Field(None, description="sets: when truncated, pass back as `cursor` to read on "
                                                 "(SSCAN order; a member may repeat); 0: nothing left")


class Popped(BaseModel):
    key: Element
    items: list[Element]


class Membership(BaseModel):
    key: Element
    member: Element
    is_member: bool


class ScoredMember(BaseModel):
    member: Element
    score: float


class SortedSetValue(BaseModel):
    key: Element
    members: list[ScoredMember]
    length: int
    truncated: bool = False
    next_start: int | None = Field(None, description="when truncated, pass as `start` to read on")


class Score(BaseModel):
    key: Element
    member: Element
    score: float | None


class StreamEntry(BaseModel):
    id: str
    fields: dict[str, Element]
    binary_fields: list[FieldPair] = Field(default_factory=list,
                                           description="fields whose names are not UTF-8 text or are cut")


class StreamEntries(BaseModel):
    key: Element
    entries: list[StreamEntry]
    truncated: bool = False
    next_start_id: str | None = Field(None, description="when truncated, pass as `start` (or as `end` when "
                                                        "reverse) to read on")


class StreamGroup(BaseModel):
    name: str
    consumers: int
    pending: int
    last_delivered_id: str


class StreamGroups(BaseModel):
    key: Element
    groups: list[StreamGroup]


class EntryId(BaseModel):
    key: Element
    id: str


class Info(BaseModel):
    section: str
    info: dict[str, Any]
    truncated: bool = False


class MemoryUsage(BaseModel):
    key: Element
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
    key: Element
    path: str
    value: Any = None
    exists: bool
    truncated: bool = False


class Channels(BaseModel):
    channels: list[Element]
    truncated: bool = False


class Published(BaseModel):
    channel: Element
    receivers: int
