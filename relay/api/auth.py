"""Bearer authentication: the admin key, or an account's API key (looked up by its hash)."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from relay.api.context import ApiContext, context
from relay.api.errors import ApiError
from relay.crypto import hash_api_key
from relay.store.models import Account

ADMIN = web.RequestKey("relay_admin", bool)
ACCOUNT: web.RequestKey[Account | None] = web.RequestKey("relay_account")
KEY_HASH = web.RequestKey("relay_key_hash", str)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/openapi.yaml"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or request.path.startswith("/ui"):
        return await handler(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <api key>")
    token = token.strip()
    admin_key = context(request).settings.admin_key
    if admin_key and hmac.compare_digest(token.encode(), admin_key.encode()):
        request[ADMIN] = True
        request[ACCOUNT] = None
        return await handler(request)
    key_hash = hash_api_key(token)
    account = await _account_for_key(context(request), key_hash)
    if account is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    request[ADMIN] = False
    request[ACCOUNT] = account
    request[KEY_HASH] = key_hash
    return await handler(request)


async def _account_for_key(ctx: ApiContext, key_hash: str) -> Account | None:
    now = ctx.clock()
    account = ctx.keys.get(key_hash, now)
    if account is None:
        account = await ctx.store.account_for_key(key_hash)
        if account is not None:
            ctx.keys.put(key_hash, account, now)
    return account


async def still_authorized(request: web.Request) -> bool:
    """For long-lived responses: is the key that opened this request still valid?"""
    key_hash = request.get(KEY_HASH)
    if key_hash is None:
        return bool(request.get(ADMIN))
    return await context(request).store.account_for_key(key_hash) is not None


def require_admin(request: web.Request) -> None:
    if not request.get(ADMIN):
        raise ApiError(403, "forbidden", "this route needs the admin key")


def require_account(request: web.Request) -> Account:
    account = request.get(ACCOUNT)
    if account is None:
        raise ApiError(403, "forbidden", "this route needs an account API key")
    return account
