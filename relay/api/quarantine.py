"""/v1/quarantine — records ingest refused, for the account whose MID they name: reason, Kafka
coordinates, and a safe excerpt of the raw bytes (records too broken to name an account are only
on the quarantine topic)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api.auth import require_account
from relay.api.context import context
from relay.api.errors import json_response
from relay.api.paging import page_params
from relay.store.models import QuarantinedRecord

routes = web.RouteTableDef()
EXCERPT_CHARS = 300
_VISIBLE = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)}  # control characters shown, not obeyed


def excerpt(data: bytes | None, limit: int = EXCERPT_CHARS) -> str | None:
    """The start of the bytes as text: invalid UTF-8 replaced, control characters spelled out."""
    if data is None:
        return None
    text = data[: limit * 4].decode("utf-8", "replace")[:limit].translate(_VISIBLE)
    return text + ("…" if len(data) > len(text.encode("utf-8", "replace")) else "")


def quarantined_json(q: QuarantinedRecord) -> dict[str, Any]:
    return {
        "id": q.id, "at": q.at, "reason": q.reason, "detail": q.detail,
        "topic": q.topic, "partition": q.partition, "offset": q.offset,
        "bytes": None if q.raw is None else len(q.raw), "excerpt": excerpt(q.raw), "key": excerpt(q.key, 100),
        "published": q.published_at is not None,
    }


@routes.get("/v1/quarantine")
async def list_quarantine(request: web.Request) -> web.Response:
    """Newest first; ``cursor`` (the previous page's ``nextCursor``) pages back."""
    account = require_account(request)
    before, limit = page_params(request, default=50, maximum=500)
    rows = await context(request).store.account_quarantine(account.id, before or None, limit)
    next_cursor = str(rows[-1].id) if len(rows) == limit and rows[-1].id is not None else None
    return json_response({"data": [quarantined_json(q) for q in rows], "nextCursor": next_cursor})
