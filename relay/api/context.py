"""What the API handlers share, injected once when the application is built."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from relay.api.errors import ApiError
from relay.api.key_cache import KeyCache
from relay.config import Settings
from relay.delivery.endpoint import EndpointSender
from relay.delivery.http import DeliveryClient
from relay.operations import OperationRunner
from relay.routing import Router
from relay.store.base import Store


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    client: DeliveryClient
    router: Router | None = None
    readiness: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    requeue: Callable[[str], None] | None = None
    circuit_state: Callable[[str], str | None] | None = None
    in_flight: Callable[[str], int] | None = None  # POSTs in flight to a callback from this instance
    operations: OperationRunner | None = None
    sender: EndpointSender | None = None
    keys: KeyCache = field(init=False)  # accounts of API keys, for settings.api_key_cache seconds

    def __post_init__(self) -> None:
        self.keys = KeyCache(self.settings.api_key_cache)


CONTEXT = web.AppKey("relay_context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def operations(ctx: ApiContext) -> OperationRunner:
    """Background work goes through the durable runner, never a task of the handler's own."""
    if ctx.operations is None:
        raise ApiError(503, "unavailable", "background operations are not running on this instance")
    return ctx.operations


def sender(ctx: ApiContext) -> EndpointSender:
    """Sends from the API (test sends) authenticate like deliveries; one token cache per instance."""
    if ctx.sender is None:
        ctx.sender = EndpointSender(ctx.client, ctx.clock)
    return ctx.sender


async def registry_changed(ctx: ApiContext) -> None:
    """Reload this instance's routing now; other instances follow within their refresh interval."""
    if ctx.router is not None:
        await ctx.router.refresh()
