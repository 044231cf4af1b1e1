"""Bounding what a tool returns, with a visible ``truncated`` marker.

Backends are asked for bounded slices wherever the protocol allows (GETRANGE, LRANGE, SCAN COUNT,
``size`` in a search). What still comes back is cut here, so one big key or one huge document cannot
blow the 128Mi memory limit or flood the AI client's context window.
"""

from __future__ import annotations

import json
from typing import Any

from .config import Limits


def text(value: Any, limit: int) -> tuple[Any, bool]:
    """Decode bytes for JSON and cut strings longer than ``limit`` bytes. Returns (value, truncated)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        cut = len(raw) > limit
        return raw[:limit].decode("utf-8", errors="backslashreplace"), cut
    if isinstance(value, str):
        if len(value) <= limit // 4:  # fast path: cannot exceed the byte limit
            return value, False
        encoded = value.encode("utf-8")
        if len(encoded) <= limit:
            return value, False
        return encoded[:limit].decode("utf-8", errors="ignore"), True
    return value, False


def items(values: list[Any], max_items: int) -> tuple[list[Any], bool]:
    """Keep at most ``max_items`` entries of a list."""
    if len(values) <= max_items:
        return values, False
    return values[:max_items], True


def deep(value: Any, limits: Limits, _depth: int = 0) -> tuple[Any, bool]:
    """Apply the string and list caps recursively to a JSON-like structure (ES documents, INFO)."""
    if isinstance(value, (str, bytes, bytearray)):
        return text(value, limits.max_value_bytes)
    if _depth > 32:
        return "…", True
    truncated = False
    if isinstance(value, dict):
        out = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= limits.max_items * 10:
                truncated = True
                break
            out[str(k)], cut = deep(v, limits, _depth + 1)
            truncated |= cut
        return out, truncated
    if isinstance(value, (list, tuple)):
        kept, truncated = items(list(value), limits.max_items)
        out_list = []
        for v in kept:
            v2, cut = deep(v, limits, _depth + 1)
            truncated |= cut
            out_list.append(v2)
        return out_list, truncated
    return value, False


def shrink_to_budget(values: list[Any], limits: Limits) -> tuple[list[Any], bool]:
    """Drop trailing entries until the list fits ``max_result_bytes`` as JSON."""
    budget = limits.max_result_bytes
    size = 2
    for i, v in enumerate(values):
        size += len(json.dumps(v, default=str)) + 1
        if size > budget:
            return values[:i], True
    return values, False
