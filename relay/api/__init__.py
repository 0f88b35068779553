"""The REST API: one module per resource, JSON errors, Bearer auth."""

from __future__ import annotations

from aiohttp import web

from relay.api import (
    accounts,
    callbacks,
    controls,
    deadletters,
    deliveries,
    docs,
    health,
    messages,
    operations,
    quarantine,
    stats,
    subscriptions,
    ui,
)
from relay.api.auth import auth_middleware
from relay.api.context import CONTEXT, ApiContext
from relay.api.docs import query_middleware
from relay.api.errors import error_middleware
from relay.api.inputs import input_middleware

MAX_BODY_BYTES = 256 * 1024


def build_api(ctx: ApiContext) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, input_middleware, auth_middleware, query_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[CONTEXT] = ctx
    for module in (health, docs, accounts, callbacks, controls, deliveries, subscriptions, deadletters, operations,
                   quarantine, messages, stats, ui):
        app.router.add_routes(module.routes)
    if not ctx.settings.metrics_listen:
        app.router.add_routes(health.metrics_routes)
    return app


def build_metrics_app() -> web.Application:
    """/metrics alone, for its own listener (``metrics_listen``)."""
    app = web.Application(middlewares=[error_middleware])
    app.router.add_routes(health.metrics_routes)
    return app


__all__ = ["ApiContext", "build_api", "build_metrics_app"]
