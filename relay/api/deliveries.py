"""/v1/callbacks/{id}/attempts and /v1/callbacks/{id}/health — what happened at one endpoint."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api.auth import require_account
from relay.api.context import context
from relay.api.errors import bad_request, json_response
from relay.api.paging import page_params, paged
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
