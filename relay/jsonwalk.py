"""Walking parsed JSON with paths, for errors that name the field (``info.subscriberKey``), and
the integer range every store can hold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def out_of_int64(item: Any) -> bool:
    """An integer (not a bool) that no BIGINT / SQLite INTEGER column can hold."""
    return type(item) is int and not INT64_MIN <= item <= INT64_MAX


def walk_json(data: Any) -> Iterator[tuple[str, Any]]:
    """Every key and value with its path (``info.subscriberKey``, ``composite.items[3]``), depth
    first, without recursion (a record may nest a thousand levels). Keys are yielded too, with
    the path of the value they name."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, item = stack.pop()
        yield path or "$", item
        if isinstance(item, dict):
            for key, child in reversed(item.items()):
                child_path = f"{path}.{key}" if path else str(key)
                yield child_path, key
                stack.append((child_path, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))
