"""/v1/callbacks/{id}/attempts and /v1/callbacks/{id}/health — what happened at one endpoint."""

from __future__ import annotations

from aiohttp import web

from relay.api.auth import require_account
from relay.api.context import context
from relay.api.errors import bad_request, json_response
from relay.api.paging import page_params, paged

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
    return json_response(paged(rows, limit))


@routes.get("/v1/callbacks/{id}/health")
async def health(request: web.Request) -> web.Response:
    """Success rate and latency over the last hour, last error, circuit, backlog, disabled reason."""
    account = require_account(request)
    ctx = context(request)
    callback = await ctx.store.get_callback(request.match_info["id"], account.id)
    now = ctx.clock()
    stats = await ctx.store.callback_health(callback.id, now - HEALTH_WINDOW)
    circuit = ctx.circuit_state(callback.id) if ctx.circuit_state else None
    oldest = stats.pop("oldestPendingCreatedAt")
    return json_response({
        "callbackId": callback.id, "enabled": callback.enabled, "disabledReason": callback.disabled_reason,
        "verified": callback.verified, "circuit": circuit or "closed", "windowSeconds": HEALTH_WINDOW,
        "oldestPendingAgeSeconds": None if oldest is None else max(0.0, now - oldest),
        "failingSince": callback.failing_since, **stats,
    })
