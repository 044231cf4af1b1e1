"""Binary-safe Redis data on the MCP wire, and what each piece costs in the response.

Redis keys, values, fields and members are bytes. In results each one is:

* a JSON string when the bytes are valid UTF-8 (the common case: output unchanged for text data);
* ``{"base64": "..."}`` when they are not (random binary, compressed or pickled values);
* ``{"length": N, "truncated": true, "text" | "base64": <first bytes>}`` when the element is longer
  than ``MCP_MAX_VALUE_BYTES``: a head and the real length, never the whole element.

Tool inputs accept the first two shapes, so a non-UTF-8 key returned by ``scan_keys`` can be passed
to ``get`` in a later call and names the same key.

The size of each shape in the HTTP response is computed before it is added (:func:`cost`), so the
tools stop reading when ``MCP_MAX_RESULT_BYTES`` is spent instead of building an answer and cutting
it afterwards. A tool result travels twice (``structuredContent`` and the JSON text block clients
without structured output read), and the cost counts both.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field

from sidecars.common.tools import fail

#: Bytes every element adds to the response besides its own encoding (indentation and separators of
#: the text copy, a field name for objects). Generous on purpose: the budget must hold.
ELEMENT_OVERHEAD = 48
#: What the JSON-RPC envelope, the fixed fields of a result and its text copy cost at most.
ENVELOPE = 2048
#: The least one byte of a Redis string costs in a result (ASCII text: once in each copy).
MIN_PER_BYTE = 2
_SLICE = 64 * 1024


class Encoded(BaseModel):
    """Bytes that are not UTF-8 text, base64-encoded (RFC 4648 with padding)."""

    model_config = ConfigDict(extra="forbid")
    base64: str = Field(description="the bytes, base64-encoded")


class Cut(BaseModel):
    """An element longer than MCP_MAX_VALUE_BYTES: its first bytes and its real length."""

    length: int = Field(description="real length in bytes")
    truncated: bool = True
    text: str | None = Field(None, description="the first bytes, when they are UTF-8 text")
    base64: str | None = Field(None, description="the first bytes base64-encoded, when they are not text")


#: A Redis string in a result.
Data = Union[str, Encoded]
Element = Union[str, Encoded, Cut]

_TEXT = "a UTF-8 string, or {\"base64\": \"...\"} for bytes that are not UTF-8 (as results return them)"
#: A Redis key in a tool input.
Key = Annotated[Union[Annotated[str, Field(min_length=1)], Encoded], Field(description=f"Redis key: {_TEXT}")]
#: Any other Redis string in a tool input (value, field, member).
Bin = Annotated[Union[str, Encoded], Field(description=_TEXT)]


def raw(value: str | Encoded) -> bytes:
    """A tool input as the bytes Redis sees."""
    if isinstance(value, Encoded):
        try:
            return base64.b64decode(value.base64, validate=True)
        except (binascii.Error, ValueError):
            raise fail("base64 input is not valid base64 (RFC 4648, with padding)") from None
    return value.encode("utf-8", errors="surrogatepass")


def data(b: bytes) -> Data:
    """Complete bytes as they appear in a result (no length check: short, already bounded data)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return Encoded(base64=base64.b64encode(b).decode("ascii"))


def _text_head(b: bytes) -> str | None:
    """The UTF-8 text of a head cut at an arbitrary byte: drop at most 3 bytes of a split character."""
    for drop in range(4):
        try:
            return b[: len(b) - drop].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def head(b: bytes, limit: int, length: int | None = None) -> tuple[Element, bool]:
    """An element of ``length`` bytes (``len(b)`` unless the reader already cut it) as it appears in a
    result: whole when it fits ``limit``, else a :class:`Cut`. Returns (element, cut)."""
    real = len(b) if length is None else length
    if real <= limit and len(b) == real:
        return data(b), False
    b = b[:limit]
    text = _text_head(b)
    if text is not None:
        return Cut(length=real, text=text), True
    return Cut(length=real, base64=base64.b64encode(b).decode("ascii")), True


def cost(element: object) -> int:
    """Upper bound of the bytes ``element`` adds to the HTTP response (structured copy + text copy)."""
    if element is None or isinstance(element, (bool, int, float)):
        return 24 + ELEMENT_OVERHEAD
    if isinstance(element, str):
        if len(element) <= 64:  # hot path: no JSON encoding; 24 bytes is the most one character can cost
            return 24 * len(element) + 8 + ELEMENT_OVERHEAD
        # JSON escapes character by character, so the encoded size is the sum over slices: measured
        # 64 Ki characters at a time, never a whole escaped copy (up to 13x the text) in memory.
        size = 6
        for i in range(0, len(element), _SLICE):
            part = element[i:i + _SLICE]
            size += len(json.dumps(part)) - 2  # ensure_ascii: the larger of the two ways a server may write it
            # The text block is the result as JSON (non-ASCII kept), itself written as a JSON string.
            size += len(json.dumps(json.dumps(part, ensure_ascii=False)[1:-1]))
        return size + ELEMENT_OVERHEAD
    if isinstance(element, Encoded):
        return 2 * (len(element.base64) + 20) + ELEMENT_OVERHEAD
    if isinstance(element, Cut):
        inner = cost(element.text) if element.text is not None else 2 * (len(element.base64 or "") + 20)
        return inner + 160 + ELEMENT_OVERHEAD
    return 2 * len(json.dumps(element, default=str)) + ELEMENT_OVERHEAD


class Budget:
    """What is left of MCP_MAX_RESULT_BYTES for one result."""

    def __init__(self, limit: int):
        self.left = max(0, limit - ENVELOPE)
        self.spent = False

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (and nothing reserved) when they do not fit."""
        if n > self.left:
            self.spent = True
            return False
        self.left -= n
        return True
