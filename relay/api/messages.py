"""/v1/messages — "did the password-reset email to this subscriber arrive or bounce?"

The timeline of one message's events (sent, bounced with code and reason, delivered …), each with
whether and when it reached each callback. Indexed by (account, messageKey / subscriberKey).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from relay import tracing
from relay.api.auth import require_account
from relay.api.context import context
from relay.api.errors import bad_request, json_response
from relay.api.paging import bounded_int
from relay.store.views import MessageEvent

routes = web.RouteTableDef()


@routes.get("/v1/messages")
async def message_status(request: web.Request) -> web.Response:
    account = require_account(request)
    given = [name for name in ("messageKey", "subscriberKey") if name in request.query]
    for name in given:
        if not request.query[name]:
            raise bad_request(f"{name} must not be empty", field=name)
    if len(given) != 1:
        raise bad_request("give exactly one of messageKey or subscriberKey", field="messageKey")
    field = given[0]
    value = request.query[field]
    if len(value) > 254:
        raise bad_request(f"{field} is at most 254 characters", field=field)
    limit = bounded_int(request, "limit", 200, 1, 1000)
    timeline = await context(request).store.message_timeline(account.id, field, value, limit)
    return json_response({field: value, "events": [_event_json(e) for e in timeline]})


def _event_json(event: MessageEvent) -> dict[str, Any]:
    info = orjson.loads(event.body).get("info") or {}
    return {
        "eventId": event.event_id, "eventCategoryType": event.type, "timestampUTC": event.timestamp_ms,
        "traceId": tracing.trace_id(event.traceparent),
        "status": info.get("status"), "bounceCode": info.get("bounceCode"), "reason": info.get("reason"),
        "to": info.get("to"), "subscriberKey": info.get("subscriberKey"), "messageKey": info.get("messageKey"),
        "deliveries": [
            {"callbackId": j.callback_id, "state": j.state, "attempts": j.attempts,
             "deliveredAt": j.finished_at if j.state == "delivered" else None, "webhookId": j.batch_id}
            for j in event.deliveries
        ],
    }
