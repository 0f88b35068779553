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
KINDS = ("redrive", "handshake", "release-held")


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
    }


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


@routes.post("/v1/operations/{id}/cancel")
async def cancel_operation(request: web.Request) -> web.Response:
    """Stops at the running instance's next step; what was done stays done."""
    account = require_account(request)
    ctx = context(request)
    await body.read_object(request, set())
    op = await ctx.store.cancel_operation(request.match_info["id"], account.id, ctx.clock())
    return json_response(operation_json(op))
