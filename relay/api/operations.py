"""/v1/operations — durable background work (bulk replays, handshakes, sweeps): its progress from
any instance, and cancelling it. Parameters are not shown: some carry a verification key."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api import body
from relay.api.auth import require_account
from relay.api.context import context
from relay.api.errors import bad_request, json_response
from relay.store.models import Operation

routes = web.RouteTableDef()
KINDS = ("redrive", "recover", "handshake", "release-held")


def operation_json(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "kind": op.kind,
        "state": op.state,
        "progress": {"done": op.done, "total": op.total},
        "error": op.error,
        "createdAt": op.created_at,
        "updatedAt": op.updated_at,
        "finishedAt": op.finished_at,
        **_pace(op),
    }


def _pace(op: Operation) -> dict[str, Any]:
    """Rate and time left, for the kinds that run at a chosen rate."""
    rate = op.params.get("rate")
    if not isinstance(rate, (int, float)):
        return {}
    left = None if op.total is None or op.finished else max(0, op.total - op.done) / rate
    return {"ratePerSecond": rate, "etaSeconds": left}


@routes.get("/v1/operations")
async def list_operations(request: web.Request) -> web.Response:
    account = require_account(request)
    kind = request.query.get("kind")
    if kind is not None and kind not in KINDS:
        raise bad_request(f"kind must be one of {', '.join(KINDS)}", field="kind")
    limit = request.query.get("limit", "50")
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 200):
        raise bad_request("limit must be an integer between 1 and 200", field="limit")
    ops = await context(request).store.list_operations(account.id, kind, int(limit))
    return json_response({"data": [operation_json(op) for op in ops]})


@routes.get("/v1/operations/{id}")
async def get_operation(request: web.Request) -> web.Response:
    account = require_account(request)
    op = await context(request).store.get_operation(request.match_info["id"], account.id)
    return json_response(operation_json(op))


@routes.post("/v1/operations/{id}/{action:cancel|pause|resume}")
async def change_operation(request: web.Request) -> web.Response:
    """Cancel or pause: the running instance stops at its next step, and what was done stays done.
    Resume: the operation is queued again and continues from where it stopped, on any instance."""
    account = require_account(request)
    ctx = context(request)
    await body.read_object(request, set())
    op = await ctx.store.change_operation_state(request.match_info["id"], account.id, request.match_info["action"],
                                                ctx.clock())
    if op.state == "queued" and ctx.operations is not None:
        ctx.operations.wake()
    return json_response(operation_json(op))
