"""/v1/subscriptions — which event types (and which filtered subset) go to which callback."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api import body
from relay.api.auth import require_account
from relay.api.context import context
from relay.api.errors import bad_request, json_response
from relay.events import KNOWN_EVENT_TYPES
from relay.ids import new_id
from relay.routing import InvalidFilter, parse_filter
from relay.store.models import Subscription

routes = web.RouteTableDef()

KNOWN_CATEGORIES = frozenset(t.split(".")[0] for t in KNOWN_EVENT_TYPES)
ORDERING_MODES = ("subscriberKey", "messageKey", "none")


def subscription_json(s: Subscription) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "callbackId": s.callback_id,
        "eventCategoryTypes": list(s.event_types),
        "filters": list(s.filters),
        "status": s.status,
        "statusReason": s.status_reason,
        "ordering": s.ordering,
        "createdAt": s.created_at,
    }


def _event_types(values: list[str]) -> tuple[str, ...]:
    for value in values:
        category, _, rest = value.partition(".")
        if rest == "*" and category in KNOWN_CATEGORIES:
            continue
        if value not in KNOWN_EVENT_TYPES:
            raise bad_request(
                f"unknown event type {value!r}; use a known type or Category.*",
                field="eventCategoryTypes",
            )
    return tuple(dict.fromkeys(values))


@routes.post("/v1/subscriptions")
async def create_subscription(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    data = await body.read_object(
        request,
        {"name", "callbackId", "eventCategoryTypes", "filters", "status", "statusReason", "ordering"},
    )
    name = body.string(data, "name")
    callback_id = body.string(data, "callbackId", max_len=100)
    types = _event_types(body.string_list(data, "eventCategoryTypes", min_items=1, max_items=50))
    filters = body.string_list(data, "filters", default=[], max_items=20)
    for text in filters:
        try:
            parse_filter(text)
        except InvalidFilter as exc:
            raise bad_request(str(exc), field="filters", code="invalid_filter") from None
    status = body.string(data, "status", default="active")
    if status not in ("active", "paused"):
        raise bad_request("status must be active or paused", field="status")
    ordering = body.string(data, "ordering", default="subscriberKey")
    if ordering not in ORDERING_MODES:
        raise bad_request("ordering must be subscriberKey, messageKey or none", field="ordering")
    subscription = Subscription(
        id=new_id("sub"), account_id=account.id, name=name, callback_id=callback_id,
        event_types=types, filters=tuple(filters), status=status,
        status_reason=body.string(data, "statusReason", default=None, max_len=500),
        ordering=ordering, created_at=ctx.clock(),
    )
    await ctx.store.create_subscription(subscription)
    return json_response(subscription_json(subscription), status=201)


@routes.get("/v1/subscriptions")
async def list_subscriptions(request: web.Request) -> web.Response:
    account = require_account(request)
    subscriptions = await context(request).store.list_subscriptions(account.id)
    return json_response({"data": [subscription_json(s) for s in subscriptions]})
