"""/v1/messages — "did the password-reset email to this subscriber arrive or bounce?"

The timeline of one message's events (sent, bounced with code and reason, delivered …), each with
whether and when it reached each callback. Indexed by (account, messageKey / subscriberKey).
"""

from __future__ import annotations

from aiohttp import web

from relay.api.auth import require_account
from relay.api.context import context
from relay.api.errors import bad_request, json_response
from relay.api.paging import bounded_int

routes = web.RouteTableDef()


@routes.get("/v1/messages")
async def message_status(request: web.Request) -> web.Response:
    account = require_account(request)
    given = [name for name in ("messageKey", "subscriberKey") if request.query.get(name)]
    if len(given) != 1:
        raise bad_request("give exactly one of messageKey or subscriberKey", field="messageKey")
    field = given[0]
    value = request.query[field]
    if len(value) > 254:
        raise bad_request(f"{field} is at most 254 characters", field=field)
    limit = bounded_int(request, "limit", 200, 1, 1000)
    timeline = await context(request).store.message_timeline(account.id, field, value, limit)
    return json_response({field: value, "events": timeline})
