"""/ui — the dashboard: static files served by Relay itself, no build step."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
routes = web.RouteTableDef()


@routes.get("/ui")
async def ui_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
async def ui_index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(UI_DIR / "index.html", headers={
        "cache-control": "no-cache",
        "content-security-policy": "default-src 'self'; style-src 'self'; script-src 'self'",
        "x-frame-options": "DENY",
    })


routes.static("/ui/", UI_DIR)
