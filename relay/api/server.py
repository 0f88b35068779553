"""Serving an aiohttp application: errors as JSON even before a handler runs, and a busy port
reported as one line that names the setting to change.

aiohttp answers requests its parser refuses (a request line or header beyond its limits) itself,
as text; ``JsonErrorRunner`` makes those answers the API's JSON error shape too.
"""

from __future__ import annotations

import errno
import socket
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler


class ListenError(Exception):
    """An address Relay cannot listen on; the message says which setting to change."""


class _JsonErrorHandler(RequestHandler):
    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs, and checks nothing was sent yet
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
        code = "bad_request" if status == 400 else "internal" if status >= 500 else phrase.lower().replace(" ", "_")
        text = message if status < 500 and message else phrase
        json_response = web.Response(status=status, content_type="application/json",
                                     body=orjson.dumps({"error": {"code": code, "message": text, "field": None}}))
        json_response.force_close()
        return json_response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # same state, one method more: errors as JSON
        return server


def check_free(host_port: tuple[str, int], setting: str) -> None:
    """Fail at once, with one line, when the address is taken (before anything else starts)."""
    host, port = host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ListenError(_busy(host, port, setting, exc)) from None


async def serve_app(app: web.Application, host_port: tuple[str, int], setting: str,
                    shutdown_timeout: float = 2.0) -> web.AppRunner:
    host, port = host_port
    runner = JsonErrorRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(_busy(host, port, setting, exc)) from None
    return runner


def _busy(host: str, port: int, setting: str, exc: OSError) -> str:
    why = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    return f"cannot listen on {host}:{port}: {why}; set {setting} to a free host:port"
