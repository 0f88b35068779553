"""A receiving endpoint that verifies every delivery and prints what arrives.

``relay receiver`` runs it; the demo uses it; so can an IT team checking its setup. It also
answers the ownership handshake: given the API address and a key, it sends the verification
key back to ``/v1/callbacks/{id}/verify`` by itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson
from aiohttp import web

from relay.verify import VerificationError, verify


class Receiver:
    def __init__(
        self,
        secret: Callable[[], str | None],
        out: TextIO = sys.stdout,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self._secret = secret
        self._out = out
        self._api_url = api_url
        self._api_key = api_key
        self._pending: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self.handle)
        return app

    async def _wait_secret(self) -> str | None:
        for _ in range(40):
            secret = self._secret()
            if secret:
                return secret
            await asyncio.sleep(0.05)
        return None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        secret = await self._wait_secret()
        if secret is None:
            self._print("! no secret configured; cannot verify", request.headers.get("webhook-id"))
            return web.json_response({"error": "receiver has no secret"}, status=503)
        try:
            msg_id = verify(secret, request.headers, body)
        except VerificationError as exc:
            self._print(f"✗ rejected: {type(exc).__name__}: {exc}", request.headers.get("webhook-id"))
            return web.json_response({"error": str(exc)}, status=401)
        payload: Any = orjson.loads(body)
        if isinstance(payload, dict) and "verificationKey" in payload:
            await self._confirm(payload)
            return web.json_response({"ok": True})
        events = payload if isinstance(payload, list) else [payload]
        for event in events:
            info = event.get("info") or {}
            detail = info.get("bounceCode") or info.get("status") or ""
            self._print(
                f"✓ verified {event.get('eventCategoryType')} {detail} "
                f"to={info.get('to')} subscriberKey={info.get('subscriberKey')} "
                f"eventId={event.get('eventId')}",
                msg_id,
            )
        return web.json_response({"received": len(events)})

    async def _confirm(self, payload: dict[str, Any]) -> None:
        callback_id = payload.get("callbackId")
        self._print(f"• ownership handshake for callback {callback_id}", None)
        if not (self._api_url and self._api_key):
            self._print(f"  verificationKey={payload.get('verificationKey')} "
                        "(send it to POST /v1/callbacks/{id}/verify)", None)
            return
        task = asyncio.get_running_loop().create_task(self._send_back(payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_back(self, payload: dict[str, Any]) -> None:
        url = f"{self._api_url}/v1/callbacks/{payload['callbackId']}/verify"
        async with aiohttp.ClientSession() as session, session.post(
            url, json={"verificationKey": payload["verificationKey"]},
            headers={"authorization": f"Bearer {self._api_key}"},
        ) as response:
            self._print(f"  ownership confirmed: HTTP {response.status}", None)

    def _print(self, text: str, msg_id: str | None) -> None:
        prefix = f"[{msg_id}] " if msg_id else ""
        print(prefix + text, file=self._out, flush=True)


def secret_from(secret: str | None, secret_file: str | None) -> Callable[[], str | None]:
    if secret:
        return lambda: secret

    def read() -> str | None:
        if secret_file and Path(secret_file).exists():
            return Path(secret_file).read_text().strip() or None
        return None

    return read
