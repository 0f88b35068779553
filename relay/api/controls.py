"""/v1/callbacks/{id}/recover and /v1/callbacks/{id}/test — an endpoint owner's controls.

Recover sends a callback every stored event it was routed in a time window again, as a durable
operation (``relay/operations/recover.py``): progress, pause, resume and cancel under
``/v1/operations/{id}`` from any instance. Test sends one signed sample event now, outside the
lanes, and answers with what the endpoint answered.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from aiohttp import web

from relay.api import body
from relay.api.auth import require_account
from relay.api.callbacks import checked_transformation
from relay.api.context import ApiContext, context, operations, sender
from relay.api.errors import ApiError, bad_request, json_response
from relay.api.operations import operation_json
from relay.delivery.direct import post_signed
from relay.delivery.shape import FORMATS, MAX_OUTPUT, TransformError, cloudevent, payload, transform
from relay.events import accepted_event_types
from relay.operations import Recover
from relay.samples import full_type, sample_event
from relay.store.models import Account, Callback, Job

routes = web.RouteTableDef()
TEST_TIMEOUT = 10.0


async def _deliverable(ctx: ApiContext, account: Account, callback_id: str) -> Callback:
    callback = await ctx.store.get_callback(callback_id, account.id)
    if not callback.verified:
        raise ApiError(409, "callback_unverified", f"callback {callback_id} has not proved it owns its URL yet")
    return callback


def _event_type(ctx: ApiContext, value: Any, field: str) -> str:
    accepted = accepted_event_types(ctx.settings.extra_event_types)
    if isinstance(value, str) and value in accepted:
        return value
    try:
        full = full_type(value) if isinstance(value, str) else None
    except ValueError:
        full = None
    if full is None or full not in accepted:
        raise bad_request(f"{field} must be an accepted event type (e.g. TransactionalSendEvents.EmailBounced)",
                          field=field)
    return full


@routes.post("/v1/callbacks/transform-preview")
async def transform_preview(request: web.Request) -> web.Response:
    """What a transformation (and format) makes of an event, before it is saved on a callback:
    the result, or the precise error (a parse error is a 400 naming ``transformation``)."""
    require_account(request)
    data = await body.read_object(request, {"transformation", "event", "format"})
    expression = checked_transformation(data.get("transformation"))
    event = data.get("event")
    if not isinstance(event, dict):
        raise bad_request("event must be an event object (as delivered, with eventId)", field="event")
    shape = data.get("format", "ens")
    if shape not in FORMATS:
        raise bad_request(f"format must be one of {', '.join(FORMATS)}", field="format")
    try:
        result = transform(expression, event)
        if shape == "cloudevents":
            result = cloudevent(event, result)
        size = len(orjson.dumps(result))
    except TransformError as exc:
        return json_response({"ok": False, "error": str(exc)})
    if size > MAX_OUTPUT:
        return json_response({"ok": False, "error": f"the result is {size} bytes, more than {MAX_OUTPUT}"})
    return json_response({"ok": True, "result": result, "bytes": size})


@routes.post("/v1/callbacks/{id}/recover")
async def recover(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    data = await body.read_object(request, {"since", "until", "eventTypes", "ratePerSecond"})
    since = body.unix_seconds("since", data.get("since"))
    until = body.unix_seconds("until", data.get("until"))
    if until <= since:
        raise bad_request("until must be after since", field="until")
    types = data.get("eventTypes")
    if types is not None:
        if not isinstance(types, list) or not 0 < len(types) <= 50:
            raise bad_request("eventTypes must be a list of 1..50 event types", field="eventTypes")
        types = sorted({_event_type(ctx, t, f"eventTypes[{i}]") for i, t in enumerate(types)})
    rate = float(body.integer(data, "ratePerSecond", default=50, low=1, high=10000))
    callback = await _deliverable(ctx, account, request.match_info["id"])
    if not callback.enabled:
        raise ApiError(409, "callback_disabled",
                       f"callback {callback.id} is disabled ({callback.disabled_reason or 'no reason given'}); "
                       "enable it first")
    op = await operations(ctx).submit(account.id, Recover.name,
                                      Recover.params(callback.id, since, until, types, rate), prefix="rc")
    return json_response(operation_json(op), status=202)


@routes.post("/v1/callbacks/{id}/test")
async def test_send(request: web.Request) -> web.Response:
    """One sample event, marked ``webhook-test: true`` and with a ``test_`` event id, signed like
    any delivery; the answer is the endpoint's status, latency and the start of its response."""
    account = require_account(request)
    ctx = context(request)
    data = await body.read_object(request, {"eventType"})
    event_type = _event_type(ctx, data.get("eventType", "TransactionalSendEvents.EmailSent"), "eventType")
    callback = await _deliverable(ctx, account, request.match_info["id"])
    event = {"eventId": "test_" + secrets.token_hex(12), **sample_event(event_type, mid=account.mid)}
    webhook_id = "test_" + secrets.token_hex(12)
    shaped = payload(callback, [Job(0, event["eventId"], callback.id, None, orjson.dumps(event), 0.0)])
    if shaped.refused:  # shaped as a real delivery would be: a transformation that fails says so
        return json_response({"ok": False, "status": None, "latencyMs": 0.0, "error": shaped.refused[0][1],
                              "responseExcerpt": None, "webhookId": webhook_id, "eventId": event["eventId"],
                              "eventType": event_type})
    outcome = await post_signed(sender(ctx), callback, shaped.body, webhook_id, ctx.clock(),
                                callback.options.timeout or TEST_TIMEOUT, {"webhook-test": "true"},
                                shaped.content_type)
    return json_response({
        "ok": outcome.ok, "status": outcome.status, "latencyMs": round(outcome.latency_ms, 2),
        "error": outcome.error, "responseExcerpt": outcome.excerpt, "webhookId": webhook_id,
        "eventId": event["eventId"], "eventType": event_type,
    })
