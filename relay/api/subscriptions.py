"""/v1/subscriptions — which event types (and which filtered subset) go to which callback."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from relay.api import body
from relay.api.auth import require_account
from relay.api.context import ApiContext, context, operations, registry_changed
from relay.api.errors import bad_request, json_response
from relay.events import KNOWN_EVENT_TYPES, accepted_event_types
from relay.ids import new_id
from relay.operations import ReleaseHeld
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
        "onPause": s.on_pause,
        "createdAt": s.created_at,
    }


def _event_types(values: list[str], extra: tuple[str, ...]) -> tuple[str, ...]:
    accepted = accepted_event_types(extra)
    categories = KNOWN_CATEGORIES | {t.split(".")[0] for t in extra}
    for value in values:
        category, _, rest = value.partition(".")
        if rest == "*" and category in categories:
            continue
        if value not in accepted:
            raise bad_request(
                f"unknown event type {value!r}; use a known type or Category.*",
                field="eventCategoryTypes",
            )
    return tuple(dict.fromkeys(values))


FIELDS = {"name", "callbackId", "eventCategoryTypes", "filters", "status", "statusReason", "ordering",
          "onPause"}


def _filters(values: list[str]) -> tuple[str, ...]:
    for text in values:
        try:
            parse_filter(text)
        except InvalidFilter as exc:
            raise bad_request(str(exc), field="filters", code="invalid_filter") from None
    return tuple(values)


def _choice(data: dict[str, Any], name: str, choices: tuple[str, ...], default: str) -> Any:
    value = body.string(data, name, default=default)
    if value not in choices:
        raise bad_request(f"{name} must be one of {', '.join(choices)}", field=name)
    return value


def _apply(data: dict[str, Any], base: Subscription, extra_types: tuple[str, ...]) -> Subscription:
    """Fields given in ``data`` replace those of ``base`` (create starts from a blank one)."""
    changes: dict[str, Any] = {}
    if "name" in data or not base.name:
        changes["name"] = body.string(data, "name")
    if "callbackId" in data or not base.callback_id:
        changes["callback_id"] = body.string(data, "callbackId", max_len=100)
    if "eventCategoryTypes" in data or not base.event_types:
        changes["event_types"] = _event_types(
            body.string_list(data, "eventCategoryTypes", min_items=1, max_items=50), extra_types)
    if "filters" in data:
        changes["filters"] = _filters(body.string_list(data, "filters", max_items=20))
    if "status" in data:
        changes["status"] = _choice(data, "status", ("active", "paused"), base.status)
    if "statusReason" in data:
        changes["status_reason"] = body.string(data, "statusReason", default=None, max_len=500)
    if "ordering" in data:
        changes["ordering"] = _choice(data, "ordering", ORDERING_MODES, base.ordering)
    if "onPause" in data:
        changes["on_pause"] = _choice(data, "onPause", ("drop", "hold"), base.on_pause)
    return dataclasses.replace(base, **changes)


@routes.post("/v1/subscriptions")
async def create_subscription(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    data = await body.read_object(request, FIELDS)
    blank = Subscription(id=new_id("sub"), account_id=account.id, name="", callback_id="",
                         event_types=(), created_at=ctx.clock())
    subscription = _apply(data, blank, ctx.settings.extra_event_types)
    await ctx.store.create_subscription(subscription)
    await registry_changed(ctx)
    return json_response(subscription_json(subscription), status=201)


@routes.get("/v1/subscriptions")
async def list_subscriptions(request: web.Request) -> web.Response:
    account = require_account(request)
    subscriptions = await context(request).store.list_subscriptions(account.id)
    callback_id = request.query.get("callbackId")
    if callback_id:
        subscriptions = [s for s in subscriptions if s.callback_id == callback_id]
    return json_response({"data": [subscription_json(s) for s in subscriptions]})


@routes.get("/v1/subscriptions/{id}")
async def get_subscription(request: web.Request) -> web.Response:
    account = require_account(request)
    subscription = await context(request).store.get_subscription(request.match_info["id"], account.id)
    return json_response(subscription_json(subscription))


@routes.patch("/v1/subscriptions/{id}")
async def update_subscription(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    current = await ctx.store.get_subscription(request.match_info["id"], account.id)
    data = await body.read_object(request, FIELDS)
    updated = _apply(data, current, ctx.settings.extra_event_types)
    return json_response(subscription_json(await _save(ctx, current, updated)))


@routes.post("/v1/subscriptions/{id}/pause")
async def pause_subscription(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    current = await ctx.store.get_subscription(request.match_info["id"], account.id)
    data = await body.read_object(request, {"statusReason", "onPause"})
    updated = _apply({**data, "status": "paused"}, current, ctx.settings.extra_event_types)
    return json_response(subscription_json(await _save(ctx, current, updated)))


@routes.post("/v1/subscriptions/{id}/resume")
async def resume_subscription(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    current = await ctx.store.get_subscription(request.match_info["id"], account.id)
    await body.read_object(request, set())
    updated = dataclasses.replace(current, status="active", status_reason=None)
    return json_response(subscription_json(await _save(ctx, current, updated)))


@routes.delete("/v1/subscriptions/{id}")
async def delete_subscription(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    await ctx.store.delete_subscription(request.match_info["id"], account.id)
    await registry_changed(ctx)
    return web.Response(status=204)


async def _save(ctx: ApiContext, current: Subscription, updated: Subscription) -> Subscription:
    """Write; when a paused subscription that held events becomes active, release them in order."""
    await ctx.store.update_subscription(updated)
    await registry_changed(ctx)
    if current.status == "paused" and updated.status == "active":
        await _release(ctx, updated.id)
        # An instance whose routing had not reloaded yet may still hold a few events: sweep again.
        await operations(ctx).submit(updated.account_id, ReleaseHeld.name, {"subscriptionId": updated.id},
                                     delay=2.0, prefix="sw")
    return updated


async def _release(ctx: ApiContext, subscription_id: str) -> None:
    for callback_id in await ctx.store.release_held(subscription_id):
        if ctx.requeue is not None:
            ctx.requeue(callback_id)
