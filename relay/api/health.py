"""/healthz (the process answers), /readyz (Kafka and the store answer), /metrics."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from relay.api.context import context
from relay.api.errors import json_response
from relay.metrics import METRICS

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    ctx = context(request)
    checks = {"store": ctx.store.ping, **ctx.readiness}
    failures = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), timeout=2.0)
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
    if failures:
        return json_response({"status": "unavailable", "failures": failures}, status=503)
    return json_response({"status": "ready"})


metrics_routes = web.RouteTableDef()


@metrics_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(_registry()), headers={"content-type": CONTENT_TYPE_LATEST})


def _registry() -> CollectorRegistry:
    """This process's metrics, or under ``relay serve --workers N`` every worker's (counters and
    histograms summed, gauges combined as each declares), from the files Prometheus' multiprocess mode keeps."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return METRICS.registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
