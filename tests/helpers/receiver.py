"""A real HTTP receiver on 127.0.0.1 for tests: records every request, answers as told."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from relay.verify import VerificationError, verify


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    status: int
    verified: bool | None = None
    request: web.Request | None = field(default=None, repr=False)

    def drop_connection(self) -> None:
        """Close the socket without answering, as a crashing receiver would."""
        assert self.request is not None and self.request.transport is not None
        self.request.transport.close()

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


Responder = Callable[["Received"], Awaitable[web.StreamResponse | int] | web.StreamResponse | int]


@dataclass
class RecordingReceiver:
    """Answers 200 unless ``responder`` says otherwise; keeps verification POSTs apart."""

    secrets: list[str] = field(default_factory=list)
    responder: Responder | None = None
    requests: list[Received] = field(default_factory=list)
    handshakes: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    tls: ssl.SSLContext | None = None  # serve https (e.g. requiring a client certificate)
    validation: dict[str, str] | None = None  # answer CloudEvents OPTIONS validation with these headers
    validations: list[dict[str, str]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> RecordingReceiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        app.router.add_route("OPTIONS", "/{tail:.*}", self._validate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _validate(self, request: web.Request) -> web.StreamResponse:
        self.validations.append({k.lower(): v for k, v in request.headers.items()})
        self._notify()
        if self.validation is None:
            return web.Response(status=405)
        return web.Response(status=200, headers=self.validation)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        payload = orjson.loads(body) if body else None
        if isinstance(payload, dict) and "verificationKey" in payload:
            self.handshakes.append(payload)
            self._notify()
            return web.json_response({"ok": True})
        received = Received(headers, body, time.time(), 200, request=request)
        if self.secrets:
            try:
                verify(self.secrets, headers, body)
                received.verified = True
            except VerificationError:
                received.verified = False
        answer: web.StreamResponse | int = 200
        if self.responder is not None:
            result = self.responder(received)
            answer = await result if asyncio.iscoroutine(result) else result  # type: ignore[assignment]
        response = web.Response(status=answer) if isinstance(answer, int) else answer
        received.status = response.status
        received.request = None
        self.requests.append(received)
        self._notify()
        return response

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- what arrived ---------------------------------------------------------------------
    def delivered(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def delivered_events(self) -> list[dict[str, Any]]:
        return [event for r in self.delivered() for event in r.json]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(
                    f"receiver condition not met in {timeout}s "
                    f"({len(self.requests)} requests, {len(self.delivered_events())} events)"
                )
            waiter = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout=min(remaining, 0.5))

    async def wait_events(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        await self.wait_for(lambda: len(self.delivered_events()) >= count, timeout)
        return self.delivered_events()
