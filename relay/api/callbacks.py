"""/v1/callbacks — receiving endpoints, their signing secret, and the ownership handshake.

On create, Relay POSTs ``{callbackId, verificationKey}`` to the URL; the owner proves it
received it by sending the key back to ``/v1/callbacks/{id}/verify`` within 4 hours.
Unverified callbacks receive no events.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from aiohttp import web

from relay.api import body
from relay.api.auth import require_account
from relay.api.context import ApiContext, context
from relay.api.errors import ApiError, bad_request, json_response
from relay.crypto import hash_api_key
from relay.delivery.http import UnsafeUrl, resolve_all
from relay.ids import new_id
from relay.signing import delivery_headers, new_secret, secret_key
from relay.store.models import Callback, SigningSecret

log = structlog.get_logger("relay.api.callbacks")
routes = web.RouteTableDef()

VERIFICATION_TTL = 4 * 3600.0
HANDSHAKE_TIMEOUT = 30.0
_background: set[asyncio.Task[None]] = set()


def callback_json(callback: Callback) -> dict[str, Any]:
    return {
        "id": callback.id,
        "name": callback.name,
        "url": callback.url,
        "maxBatchSize": callback.max_batch_size,
        "ensSignature": callback.ens_signature,
        "verified": callback.verified,
        "enabled": callback.enabled,
        "disabledReason": callback.disabled_reason,
        "createdAt": callback.created_at,
    }


async def check_callback_url(ctx: ApiContext, url: str) -> None:
    """Registration-time URL rules; the same rules are enforced again at connect time."""
    try:
        ctx.client.policy.check_url(url)
    except UnsafeUrl as exc:
        raise bad_request(f"url {exc}", field="url", code="unsafe_url") from None
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise bad_request("url must not have a query string or fragment", field="url")
    host = parts.hostname or ""
    if ctx.client.policy.host_allowlisted(host):
        return
    try:
        addresses = await resolve_all(host)
    except OSError:
        raise bad_request(f"url host {host!r} does not resolve", field="url") from None
    refused = [str(a) for a in addresses if not ctx.client.policy.ip_allowed(host, a)]
    if refused:
        raise bad_request(
            f"url host {host!r} resolves to a private or reserved address ({refused[0]})",
            field="url", code="unsafe_url",
        )


@routes.post("/v1/callbacks")
async def create_callback(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    data = await body.read_object(request, {"name", "url", "maxBatchSize", "ensSignature"})
    name = body.string(data, "name")
    url = body.string(data, "url", max_len=2000)
    max_batch = body.integer(data, "maxBatchSize", default=1000, low=1, high=1000)
    ens = body.boolean(data, "ensSignature", default=False)
    await check_callback_url(ctx, url)
    now = ctx.clock()
    secret = new_secret()
    callback = Callback(
        id=new_id("cb"), account_id=account.id, name=name, url=url, max_batch_size=max_batch,
        secrets=(SigningSecret(secret, now),), verified=False, ens_signature=ens, created_at=now,
    )
    await ctx.store.create_callback(callback)
    await start_handshake(ctx, callback)
    return json_response({**callback_json(callback), "secret": secret}, status=201)


async def start_handshake(ctx: ApiContext, callback: Callback) -> None:
    """Issue a fresh single-use key and POST it to the URL in the background."""
    key = secrets.token_urlsafe(24)
    await ctx.store.set_verification(callback.id, hash_api_key(key), ctx.clock() + VERIFICATION_TTL)
    task = asyncio.create_task(_send_handshake(ctx, callback, key))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _send_handshake(ctx: ApiContext, callback: Callback, key: str) -> None:
    payload = orjson.dumps({"callbackId": callback.id, "verificationKey": key})
    now = ctx.clock()
    headers = delivery_headers(
        [secret_key(s.secret) for s in callback.active_secrets(now)],
        f"verify_{callback.id}", int(now), payload, ens=callback.ens_signature,
    )
    outcome = await ctx.client.post(callback.url, payload, headers, HANDSHAKE_TIMEOUT)
    log.info("verification_sent", callback_id=callback.id, status=outcome.status,
             error=outcome.error)


@routes.get("/v1/callbacks")
async def list_callbacks(request: web.Request) -> web.Response:
    account = require_account(request)
    callbacks = await context(request).store.list_callbacks(account.id)
    return json_response({"data": [callback_json(c) for c in callbacks]})


@routes.get("/v1/callbacks/{id}")
async def get_callback(request: web.Request) -> web.Response:
    account = require_account(request)
    callback = await context(request).store.get_callback(request.match_info["id"], account.id)
    return json_response(callback_json(callback))


@routes.post("/v1/callbacks/{id}/verify")
async def verify_callback(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    callback_id = request.match_info["id"]
    data = await body.read_object(request, {"verificationKey", "callbackId"})
    key = body.string(data, "verificationKey", max_len=200)
    given_id = body.string(data, "callbackId", default=callback_id)
    if given_id != callback_id:
        raise bad_request("callbackId does not match the URL", field="callbackId")
    result = await ctx.store.confirm_verification(
        callback_id, account.id, hash_api_key(key), ctx.clock()
    )
    if result == "mismatch":
        raise ApiError(400, "verification_failed", "verificationKey is wrong or already used",
                       "verificationKey")
    if result == "expired":
        raise ApiError(400, "verification_expired",
                       "verificationKey expired; request a new one", "verificationKey")
    callback = await ctx.store.get_callback(callback_id, account.id)
    return json_response(callback_json(callback))


@routes.post("/v1/callbacks/{id}/verification")
async def resend_verification(request: web.Request) -> web.Response:
    """Issue a new verification key (the old one stops working) and send it again."""
    account = require_account(request)
    ctx = context(request)
    callback = await ctx.store.get_callback(request.match_info["id"], account.id)
    if callback.verified:
        raise ApiError(409, "already_verified", "callback is already verified")
    await start_handshake(ctx, callback)
    return json_response({"id": callback.id, "sent": True}, status=202)
