"""Cursor pagination: ``?limit=&cursor=``; the cursor is the last id of the previous page."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api.errors import bad_request


def page_params(request: web.Request, default: int = 100, maximum: int = 1000) -> tuple[int, int]:
    cursor, limit = request.query.get("cursor", "0"), request.query.get("limit", str(default))
    if not cursor.isdigit():
        raise bad_request("cursor must be the nextCursor of a previous page", field="cursor")
    if not limit.isdigit() or not 1 <= int(limit) <= maximum:
        raise bad_request(f"limit must be 1..{maximum}", field="limit")
    return int(cursor), int(limit)


def paged(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    next_cursor = str(rows[-1]["id"]) if len(rows) == limit else None
    return {"data": rows, "nextCursor": next_cursor}
