"""RFC 6902 operations built directly on the raw JSON of the object (no typed round-trip).

Every helper looks at the current document so that it never emits an ``add`` into a map or list
that does not exist yet: it creates the container first, as the API server requires.
"""

from __future__ import annotations

from typing import Any

Operation = dict[str, Any]


def escape(token: str) -> str:
    """JSON Pointer escaping (RFC 6901): ``~`` -> ``~0`` then ``/`` -> ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str) -> str:
    return "".join("/" + escape(t) for t in tokens)


def set_map_entry(document: dict[str, Any], path: tuple[str, ...], key: str, value: Any) -> list[Operation]:
    """Set ``document[path...][key] = value``, creating the map when it is absent or null."""
    parent = document
    for token in path:
        parent = parent.get(token) if isinstance(parent, dict) else None
    if not isinstance(parent, dict):
        return [{"op": "add", "path": pointer(*path), "value": {key: value}}]
    op = "replace" if key in parent else "add"
    return [{"op": op, "path": pointer(*path, key), "value": value}]


def _list_at(document: dict[str, Any], path: tuple[str, ...]) -> list[Any] | None:
    node: Any = document
    for token in path:
        node = node.get(token) if isinstance(node, dict) else None
    return node if isinstance(node, list) else None


def append_to_list(document: dict[str, Any], path: tuple[str, ...], value: Any) -> list[Operation]:
    """Append ``value`` to the list at ``path``, creating the list when it is absent or null."""
    if _list_at(document, path) is None:
        return [{"op": "add", "path": pointer(*path), "value": [value]}]
    return [{"op": "add", "path": pointer(*path) + "/-", "value": value}]


def prepend_to_list(document: dict[str, Any], path: tuple[str, ...], value: Any) -> list[Operation]:
    """Insert ``value`` as the first entry of the list at ``path``, creating the list if needed."""
    if _list_at(document, path) is None:
        return [{"op": "add", "path": pointer(*path), "value": [value]}]
    return [{"op": "add", "path": pointer(*path) + "/0", "value": value}]
