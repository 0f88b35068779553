"""/v1/deadletters — what could not be delivered, why, and putting it back on the way.

A replayed dead letter goes back into its callback's lane with the same ``webhook-id``; its new
attempts join the same attempt log.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from relay.api import body
from relay.api.auth import require_account
from relay.api.context import ApiContext, context
from relay.api.errors import ApiError, bad_request, json_response
from relay.api.paging import page_params, paged

routes = web.RouteTableDef()
FILTER_FIELDS = ("callbackId", "eventType", "reason", "since", "until")


def _filters(source: dict[str, Any]) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for name in FILTER_FIELDS:
        value = source.get(name)
        if value is None:
            continue
        if name in ("since", "until"):
            try:
                filters[name] = float(value)
            except (TypeError, ValueError):
                raise bad_request(f"{name} must be unix seconds", field=name) from None
        elif not isinstance(value, str) or not 0 < len(value) <= 200:
            raise bad_request(f"{name} must be a string of 1..200 characters", field=name)
        else:
            filters[name] = value
    return filters


def _id(request: web.Request) -> int:
    return int(request.match_info["id"])


@routes.get("/v1/deadletters")
async def list_deadletters(request: web.Request) -> web.Response:
    account = require_account(request)
    after, limit = page_params(request)
    rows = await context(request).store.list_deadletters_page(
        account.id, _filters(dict(request.query)), after, limit)
    return json_response(paged(rows, limit))


@routes.get("/v1/deadletters/{id:[0-9]+}")
async def get_deadletter(request: web.Request) -> web.Response:
    account = require_account(request)
    return json_response(await context(request).store.get_deadletter(account.id, _id(request)))


@routes.post("/v1/deadletters/{id:[0-9]+}/replay")
async def replay_one(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    letter_id = _id(request)
    if not await _replay(ctx, account.id, [letter_id]):
        raise ApiError(404, "not_found", f"dead letter {letter_id} not found")
    return json_response({"replayed": 1}, status=202)


@routes.delete("/v1/deadletters/{id:[0-9]+}")
async def purge_one(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    letter_id = _id(request)
    if not await ctx.store.purge_deadletters(account.id, {"ids": [letter_id]}):
        raise ApiError(404, "not_found", f"dead letter {letter_id} not found")
    return web.Response(status=204)


@routes.post("/v1/deadletters/purge")
async def purge_many(request: web.Request) -> web.Response:
    account = require_account(request)
    data = await body.read_object(request, set(FILTER_FIELDS))
    purged = await context(request).store.purge_deadletters(account.id, _filters(data))
    return json_response({"purged": purged})


@dataclass
class Redrive:
    """A bulk replay running in the background at a bounded rate."""

    id: str
    account_id: str
    rate: float
    replayed: int = 0
    done: bool = False
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "replayed": self.replayed, "done": self.done, "ratePerSecond": self.rate,
                "error": self.error}


_redrives: dict[str, Redrive] = {}
_sequence = itertools.count(1)


@routes.post("/v1/deadletters/replay")
async def replay_many(request: web.Request) -> web.Response:
    """Replay a selection (``ids``) or everything matching a filter, at ``ratePerSecond``."""
    account = require_account(request)
    ctx = context(request)
    data = await body.read_object(request, {"ids", "ratePerSecond", *FILTER_FIELDS})
    rate = float(body.integer(data, "ratePerSecond", default=100, low=1, high=10000))
    ids = data.get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids) or len(ids) > 10000):
        raise bad_request("ids must be a list of up to 10000 dead-letter ids", field="ids")
    filters = _filters(data)
    if ids is not None:
        filters["ids"] = ids
    redrive = Redrive(f"rd_{next(_sequence)}", account.id, rate)
    redrive.task = asyncio.create_task(_run_redrive(ctx, redrive, filters))
    _redrives[redrive.id] = redrive
    return json_response(redrive.json(), status=202)


@routes.get("/v1/deadletters/replay/{replay_id}")
async def replay_progress(request: web.Request) -> web.Response:
    account = require_account(request)
    redrive = _redrives.get(request.match_info["replay_id"])
    if redrive is None or redrive.account_id != account.id:
        raise ApiError(404, "not_found", "no such replay")
    return json_response(redrive.json())


async def _run_redrive(ctx: ApiContext, redrive: Redrive, filters: dict[str, Any]) -> None:
    chunk = max(1, min(500, int(redrive.rate)))
    try:
        while True:
            rows = await ctx.store.list_deadletters_page(redrive.account_id, filters, 0, chunk)
            if not rows:
                break
            await _replay(ctx, redrive.account_id, [row["id"] for row in rows])
            redrive.replayed += len(rows)
            await asyncio.sleep(len(rows) / redrive.rate)
    except Exception as exc:
        redrive.error = f"{type(exc).__name__}: {exc}"
    finally:
        redrive.done = True


async def _replay(ctx: ApiContext, account_id: str, ids: list[int]) -> list[str]:
    """Returns the callbacks whose lanes were woken (empty: none of the ids is this account's)."""
    callbacks = await ctx.store.replay_deadletters(account_id, ids, ctx.clock())
    for callback_id in callbacks:
        if ctx.requeue is not None:
            ctx.requeue(callback_id)
    return callbacks
