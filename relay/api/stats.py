"""/v1/stats and /v1/activity/stream — live counts per event type, for analysts and dashboards."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from relay.api.auth import require_account, still_authorized
from relay.api.context import ApiContext, context
from relay.api.errors import bad_request, json_response
from relay.api.paging import bounded_int

routes = web.RouteTableDef()
KEY_RECHECK_SECONDS = 2.0
BUCKETS = {"minute": 60_000, "hour": 3_600_000}
MAX_WINDOW_MINUTES = 7 * 24 * 60


async def counts(ctx: ApiContext, account_id: str, window_minutes: int, bucket: str) -> dict[str, Any]:
    bucket_ms = BUCKETS[bucket]
    now_ms = int(ctx.clock() * 1000)
    since = (now_ms - window_minutes * 60_000) // bucket_ms * bucket_ms
    rows = await ctx.store.event_counts(account_id, since, bucket_ms)
    series: dict[int, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for kind, start, count in rows:
        series.setdefault(start, {})[kind] = count
        totals[kind] = totals.get(kind, 0) + count
    deliveries: dict[int, dict[str, int]] = {}
    delivery_totals = {"delivered": 0, "retry": 0, "dead": 0, "eventsDelivered": 0}
    for attempt in await ctx.store.attempt_counts(account_id, since, bucket_ms):
        per = deliveries.setdefault(attempt.bucket_ms, {"delivered": 0, "retry": 0, "dead": 0, "eventsDelivered": 0})
        per[attempt.outcome] = per.get(attempt.outcome, 0) + attempt.requests
        delivery_totals[attempt.outcome] = delivery_totals.get(attempt.outcome, 0) + attempt.requests
        if attempt.outcome == "delivered":
            per["eventsDelivered"] += attempt.events
            delivery_totals["eventsDelivered"] += attempt.events
    return {
        "bucket": bucket, "since": since, "until": now_ms, "totals": totals,
        "series": [{"start": start, "counts": series[start]} for start in sorted(series)],
        # Webhook POSTs by outcome (delivered; retry: failed, to be tried again; dead), apart from
        # event types: a "Delivered" event type is an SMS/email fact, not a webhook delivery.
        "deliveries": {"totals": delivery_totals,
                       "series": [{"start": start, "counts": deliveries[start]} for start in sorted(deliveries)]},
    }


def _window(request: web.Request) -> tuple[int, str]:
    bucket = request.query.get("bucket", "minute")
    if bucket not in BUCKETS:
        raise bad_request("bucket must be minute or hour", field="bucket")
    return bounded_int(request, "windowMinutes", 60, 1, MAX_WINDOW_MINUTES), bucket


@routes.get("/v1/stats")
async def stats(request: web.Request) -> web.Response:
    """Counts per event type, and webhook POSTs per outcome, per minute (or hour) over a window
    (default the last 60 minutes)."""
    account = require_account(request)
    window, bucket = _window(request)
    return json_response(await counts(context(request), account.id, window, bucket))


@routes.get("/v1/activity/stream")
async def activity_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the per-minute counts of the last hour, pushed every second. The key
    is checked again every ``KEY_RECHECK_SECONDS``: revoking it ends the stream (``event: end``)."""
    account = require_account(request)
    ctx = context(request)
    window, bucket = _window(request)
    response = web.StreamResponse(headers={"content-type": "text/event-stream",
                                           "cache-control": "no-cache"})
    await response.prepare(request)
    checked = time.monotonic()
    try:
        while True:
            if time.monotonic() - checked >= KEY_RECHECK_SECONDS:
                checked = time.monotonic()
                if not await still_authorized(request):
                    await response.write(b'event: end\ndata: {"reason": "api key revoked"}\n\n')
                    break
            payload = orjson.dumps(await counts(ctx, account.id, window, bucket))
            await response.write(b"event: counts\ndata: " + payload + b"\n\n")
            await asyncio.sleep(1.0)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response
