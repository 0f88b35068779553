"""Cursor pagination: ``?limit=&cursor=``; the cursor is the last id of the previous page."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api.errors import bad_request
from relay.api.inputs import database_id


def page_params(request: web.Request, default: int = 100, maximum: int = 1000) -> tuple[int, int]:
    cursor = database_id(request.query.get("cursor", "0"))
    if cursor is None:
        raise bad_request("cursor must be the nextCursor of a previous page", field="cursor")
    return cursor, bounded_int(request, "limit", default, 1, maximum)


def bounded_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``low..high`` (ASCII digits only), else a 400 naming it."""
    text = request.query.get(name, str(default))
    value = database_id(text)
    if value is None or not low <= value <= high:
        raise bad_request(f"{name} must be an integer {low}..{high}", field=name)
    return value


def paged(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    next_cursor = str(rows[-1]["id"]) if len(rows) == limit else None
    return {"data": rows, "nextCursor": next_cursor}
