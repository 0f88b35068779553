"""/v1/deadletters — what could not be delivered, why, and putting it back on the way.

A replayed dead letter goes back into its callback's lane with the same ``webhook-id``; its new
attempts join the same attempt log.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from relay.api import body
from relay.api.auth import require_account
from relay.api.context import ApiContext, context, operations, registry_changed
from relay.api.deliveries import attempt_json
from relay.api.errors import ApiError, bad_request, json_response
from relay.api.inputs import database_id
from relay.api.operations import operation_json
from relay.api.paging import page_params, paged
from relay.operations import Redrive
from relay.store.models import Operation
from relay.store.views import DeadLetter, DeadLetterFilter

routes = web.RouteTableDef()
FILTER_FIELDS = {"callbackId": "callback_id", "eventType": "event_type", "reason": "reason", "since": "since",
                 "until": "until"}


def _filters(source: dict[str, Any], ids: list[int] | None = None) -> DeadLetterFilter:
    """The selection a query string or body names (``callbackId``, ``eventType``, ``reason``, ``since``,
    ``until``), and ``ids`` when given."""
    values: dict[str, Any] = {}
    for name, attribute in FILTER_FIELDS.items():
        value = source.get(name)
        if value is None:
            continue
        if name in ("since", "until"):
            values[attribute] = body.unix_seconds(name, value)
        elif not isinstance(value, str) or not 0 < len(value) <= 200:
            raise bad_request(f"{name} must be a string of 1..200 characters", field=name)
        else:
            values[attribute] = value
    return DeadLetterFilter(**values, ids=None if ids is None else tuple(ids))




def _id(request: web.Request) -> int:
    letter_id = database_id(request.match_info["id"])
    if letter_id is None:
        raise ApiError(404, "not_found", f"dead letter {request.match_info['id'][:30]} not found")
    return letter_id


@routes.get("/v1/deadletters")
async def list_deadletters(request: web.Request) -> web.Response:
    account = require_account(request)
    after, limit = page_params(request)
    rows = await context(request).store.list_deadletters_page(
        account.id, _filters(dict(request.query)), after, limit)
    return json_response(paged([deadletter_json(d) for d in rows], limit))


@routes.get("/v1/deadletters/{id:[0-9]+}")
async def get_deadletter(request: web.Request) -> web.Response:
    account = require_account(request)
    detail = await context(request).store.get_deadletter(account.id, _id(request))
    return json_response({**deadletter_json(detail.letter), "event": orjson.loads(detail.event_body),
                          "attempts": [attempt_json(a) for a in detail.attempts]})


def deadletter_json(d: DeadLetter) -> dict[str, Any]:
    return {"id": d.id, "jobId": d.job_id, "webhookId": d.batch_id, "callbackId": d.callback_id, "reason": d.reason,
            "createdAt": d.created_at, "eventId": d.event_id, "attemptCount": d.attempts,
            "eventType": d.event_type, "subscriberKey": d.subscriber_key, "messageKey": d.message_key}


@routes.post("/v1/deadletters/{id:[0-9]+}/replay")
async def replay_one(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    letter_id = _id(request)
    data = await body.read_object(request, {"enableCallback"})
    detail = await ctx.store.get_deadletter(account.id, letter_id)
    await _callback_can_receive(ctx, account.id, detail.letter.callback_id,
                                body.boolean(data, "enableCallback", default=False))
    if not await _replay(ctx, account.id, [letter_id]):
        raise ApiError(404, "not_found", f"dead letter {letter_id} not found")
    return json_response({"replayed": 1}, status=202)


async def _callback_can_receive(ctx: ApiContext, account_id: str, callback_id: str, enable: bool) -> None:
    """A replay to a disabled callback would sit pending unseen: refuse it (409) with the reason the
    callback was disabled, unless the caller asks to enable the callback again."""
    callback = await ctx.store.get_callback(callback_id, account_id)
    if callback.enabled:
        return
    if not enable:
        raise ApiError(409, "callback_disabled",
                       f"callback {callback_id} is disabled ({callback.disabled_reason or 'no reason given'}); "
                       "fix the endpoint, then replay with enableCallback: true")
    await ctx.store.set_callback_enabled(callback_id, True, None)
    await registry_changed(ctx)


def _selection_required(data: dict[str, Any], selection: DeadLetterFilter) -> None:
    """A bulk action with no filter touches every dead letter: only when the body says so."""
    if selection.empty and data.get("all") is not True:
        raise bad_request('give ids or a filter (callbackId, eventType, reason, since, until), or "all": true '
                          "to act on every dead letter", field="all", code="selection_required")


@routes.delete("/v1/deadletters/{id:[0-9]+}")
async def purge_one(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    letter_id = _id(request)
    if not await ctx.store.purge_deadletters(account.id, DeadLetterFilter(ids=(letter_id,))):
        raise ApiError(404, "not_found", f"dead letter {letter_id} not found")
    return web.Response(status=204)


@routes.post("/v1/deadletters/purge")
async def purge_many(request: web.Request) -> web.Response:
    account = require_account(request)
    data = await body.read_object(request, {"all", *FILTER_FIELDS})
    body.boolean(data, "all", default=False)
    selection = _filters(data)
    _selection_required(data, selection)
    purged = await context(request).store.purge_deadletters(account.id, selection)
    return json_response({"purged": purged})


@routes.post("/v1/deadletters/replay")
async def replay_many(request: web.Request) -> web.Response:
    """Replay a selection (``ids``) or everything matching a filter, at ``ratePerSecond``."""
    account = require_account(request)
    ctx = context(request)
    data = await body.read_object(request, {"ids", "ratePerSecond", "all", "enableCallback", *FILTER_FIELDS})
    rate = float(body.integer(data, "ratePerSecond", default=100, low=1, high=10000))
    body.boolean(data, "all", default=False)
    ids = data.get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids) or len(ids) > 10000):
        raise bad_request("ids must be a list of up to 10000 dead-letter ids", field="ids")
    selection = _filters(data, ids)
    _selection_required(data, selection)
    if selection.callback_id is not None:
        await _callback_can_receive(ctx, account.id, selection.callback_id,
                                    body.boolean(data, "enableCallback", default=False))
    op = await operations(ctx).submit(account.id, Redrive.name, Redrive.params(selection, rate), prefix="rd")
    return json_response(replay_json(op), status=202)


@routes.get("/v1/deadletters/replay/{replay_id}")
async def replay_progress(request: web.Request) -> web.Response:
    """The same operation as ``GET /v1/operations/{id}``, in the replay's own words."""
    account = require_account(request)
    op = await context(request).store.get_operation(request.match_info["replay_id"], account.id)
    if op.kind != Redrive.name:
        raise ApiError(404, "not_found", "no such replay")
    return json_response(replay_json(op))


def replay_json(op: Operation) -> dict[str, Any]:
    """The operation in the replay's words (``ratePerSecond`` comes with ``operation_json``)."""
    return {**operation_json(op), "replayed": op.done, "done": op.finished}


async def _replay(ctx: ApiContext, account_id: str, ids: list[int]) -> list[str]:
    """Returns the callbacks whose lanes were woken (empty: none of the ids is this account's)."""
    callbacks = await ctx.store.replay_deadletters(account_id, ids, ctx.clock())
    for callback_id in callbacks:
        if ctx.requeue is not None:
            ctx.requeue(callback_id)
    return callbacks
