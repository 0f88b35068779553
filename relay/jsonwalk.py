"""Walking parsed JSON with paths, for errors that name the field (``info.subscriberKey``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


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
