"""/v1/callbacks/{id}/attempts and /v1/callbacks/{id}/health — what happened at one endpoint."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from relay.api.auth import require_account
from relay.api.context import context
from relay.api.errors import bad_request, json_response
from relay.api.paging import bounded_int, page_params, paged
from relay.store.views import AttemptRow

routes = web.RouteTableDef()
OUTCOMES = ("delivered", "retry", "dead")
HEALTH_WINDOW = 3600.0


@routes.get("/v1/callbacks/{id}/attempts")
async def list_attempts(request: web.Request) -> web.Response:
    """Every POST to this callback, oldest first; ``outcome`` filters (delivered, retry, dead)."""
    account = require_account(request)
    ctx = context(request)
    callback = await ctx.store.get_callback(request.match_info["id"], account.id)
    outcome = request.query.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise bad_request("outcome must be delivered, retry or dead", field="outcome")
    after, limit = page_params(request)
    rows = await ctx.store.list_attempts(callback.id, outcome, after, limit)
    return json_response(paged([attempt_json(a) for a in rows], limit))


@routes.get("/v1/callbacks/{id}/activity")
async def activity(request: web.Request) -> web.Response:
    """Success and latency per minute over a window (default 60 minutes), and the latest POSTs."""
    account = require_account(request)
    ctx = context(request)
    callback = await ctx.store.get_callback(request.match_info["id"], account.id)
    window = bounded_int(request, "windowMinutes", 60, 1, 24 * 60)
    now_ms = int(ctx.clock() * 1000)
    since = (now_ms - window * 60_000) // 60_000 * 60_000
    buckets: dict[int, dict[str, Any]] = {}
    for b in await ctx.store.attempt_series(callback.id, since, 60_000):
        entry = buckets.setdefault(b.bucket_ms, {"start": b.bucket_ms, "delivered": 0, "retry": 0, "dead": 0,
                                                 "latencySum": 0.0})
        entry[b.outcome] = entry.get(b.outcome, 0) + b.requests
        entry["latencySum"] += b.average_latency_ms * b.requests
    series = []
    for start in sorted(buckets):
        entry = buckets[start]
        total = entry["delivered"] + entry["retry"] + entry["dead"]
        latency = entry.pop("latencySum")
        series.append({**entry, "averageLatencyMs": round(latency / total, 2) if total else None})
    recent = await ctx.store.recent_attempts(callback.id, bounded_int(request, "limit", 50, 1, 500))
    history = await ctx.store.health_history(callback.id, 20)
    return json_response({"callbackId": callback.id, "since": since, "until": now_ms, "series": series,
                          "recentAttempts": [attempt_json(a) for a in recent],
                          "healthHistory": [{"at": h.at, "kind": h.kind, "detail": orjson.loads(h.detail)}
                                            for h in history]})


@routes.get("/v1/callbacks/{id}/health")
async def health(request: web.Request) -> web.Response:
    """Success rate and latency over the last hour, last error, circuit, backlog, disabled reason."""
    account = require_account(request)
    ctx = context(request)
    callback = await ctx.store.get_callback(request.match_info["id"], account.id)
    now = ctx.clock()
    stats = await ctx.store.callback_health(callback.id, now - HEALTH_WINDOW)
    circuit = ctx.circuit_state(callback.id) if ctx.circuit_state else None
    oldest = stats.oldest_pending_created_at
    failure = stats.last_failure
    return json_response({
        "callbackId": callback.id, "enabled": callback.enabled, "disabledReason": callback.disabled_reason,
        "verified": callback.verified, "circuit": circuit or "closed", "windowSeconds": HEALTH_WINDOW,
        "oldestPendingAgeSeconds": None if oldest is None else max(0.0, now - oldest),
        "failingSince": callback.failing_since,
        "attempts": stats.attempts,
        "successRate": stats.delivered / stats.attempts if stats.attempts else None,
        "averageLatencyMs": stats.average_latency_ms,
        "pending": stats.pending,
        "nextRetryAt": stats.next_retry_at,
        "inFlight": ctx.in_flight(callback.id) if ctx.in_flight else 0,
        "deadLetters": stats.dead_letters,
        "lastError": None if failure is None else {
            "at": failure.at, "status": failure.status, "error": failure.error,
            "responseExcerpt": failure.response_excerpt},
    })


def attempt_json(a: AttemptRow) -> dict[str, Any]:
    return {"id": a.id, "webhookId": a.batch_id, "callbackId": a.callback_id, "events": a.job_count, "at": a.at,
            "status": a.status, "latencyMs": a.latency_ms, "error": a.error,
            "responseExcerpt": a.response_excerpt, "outcome": a.outcome}
