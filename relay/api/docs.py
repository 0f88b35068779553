"""/v1/openapi.yaml — the API's own description, served from ``schemas/openapi.yaml``."""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml
from aiohttp import web

from relay.api.errors import error_response
from relay.events import SCHEMA_DIR

routes = web.RouteTableDef()
OPENAPI_PATH = SCHEMA_DIR / "openapi.yaml"


@routes.get("/v1/openapi.yaml")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_PATH.read_bytes(), content_type="application/yaml")


@cache
def documented_query_parameters() -> dict[tuple[str, str], frozenset[str]]:
    """(METHOD, path template) → the query parameters the document allows."""
    spec = yaml.safe_load(OPENAPI_PATH.read_text())
    shared_params = spec["components"]["parameters"]

    def resolve(param: dict[str, Any]) -> dict[str, Any]:
        ref = param.get("$ref")
        return shared_params[ref.rsplit("/", 1)[1]] if ref else param

    allowed: dict[tuple[str, str], frozenset[str]] = {}
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method == "parameters":
                continue
            params = [resolve(p) for p in (*shared, *operation.get("parameters", []))]
            allowed[(method.upper(), path)] = frozenset(p["name"] for p in params if p.get("in") == "query")
    return allowed


@web.middleware
async def query_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown query parameters are an error, not silently ignored (a typo'd filter would
    otherwise return everything)."""
    if request.query and request.path.startswith("/v1/") and request.path != "/v1/openapi.yaml":
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else request.path
        allowed = documented_query_parameters().get((request.method, template))
        if allowed is not None:
            unknown = sorted(set(request.query) - allowed)
            if unknown:
                return error_response(400, "unknown_parameter",
                                      f"unknown query parameter {unknown[0]!r}", unknown[0])
    return await handler(request)
