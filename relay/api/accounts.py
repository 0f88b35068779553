"""/v1/accounts — the admin creates accounts and their API keys (several per account, revocable).

A key is shown once, when it is created; only its SHA-256 hash is stored.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api import body
from relay.api.auth import require_admin
from relay.api.context import ApiContext, context, registry_changed
from relay.api.errors import bad_request, json_response
from relay.crypto import hash_api_key, new_api_key
from relay.ids import new_id
from relay.store.models import Account, ApiKey

routes = web.RouteTableDef()
MAX_MID = 2**63 - 1


def account_json(account: Account) -> dict[str, Any]:
    return {"id": account.id, "name": account.name, "mid": account.mid,
            "createdAt": account.created_at}


def key_json(key: ApiKey) -> dict[str, Any]:
    return {"keyId": key.id, "name": key.name, "prefix": key.prefix, "createdAt": key.created_at,
            "revokedAt": key.revoked_at}


def issue_key(ctx: ApiContext, account_id: str, name: str) -> tuple[str, ApiKey]:
    secret = new_api_key()
    return secret, ApiKey(new_id("key"), account_id, hash_api_key(secret), secret[:7], name,
                          ctx.clock())


@routes.post("/v1/accounts")
async def create_account(request: web.Request) -> web.Response:
    require_admin(request)
    ctx = context(request)
    data = await body.read_object(request, {"name", "mid"})
    name = body.string(data, "name")
    mid = data.get("mid")
    if isinstance(mid, float) and mid.is_integer():
        mid = int(mid)
    if isinstance(mid, int) and not isinstance(mid, bool) and 0 <= mid <= MAX_MID:
        mid = str(mid)
    if "mid" not in data:
        raise bad_request("mid is required", field="mid", code="required")
    if not isinstance(mid, str) or not (mid.isascii() and mid.isdigit()) or len(mid) > 20:
        raise bad_request("mid must be the account's numeric MID", field="mid")
    account = Account(new_id("acct"), name, mid, ctx.clock())
    secret, key = issue_key(ctx, account.id, "initial")
    await ctx.store.create_account(account, key)
    await registry_changed(ctx)
    return json_response({**account_json(account), "apiKey": secret, "keyId": key.id}, status=201)


@routes.get("/v1/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    require_admin(request)
    accounts = await context(request).store.list_accounts()
    return json_response({"data": [account_json(a) for a in accounts]})


@routes.get("/v1/accounts/{id}")
async def get_account(request: web.Request) -> web.Response:
    require_admin(request)
    account = await context(request).store.get_account(request.match_info["id"])
    return json_response(account_json(account))


@routes.post("/v1/accounts/{id}/keys")
async def create_key(request: web.Request) -> web.Response:
    require_admin(request)
    ctx = context(request)
    account = await ctx.store.get_account(request.match_info["id"])
    data = await body.read_object(request, {"name"})
    secret, key = issue_key(ctx, account.id, body.string(data, "name", default="unnamed"))
    await ctx.store.create_api_key(key)
    return json_response({**key_json(key), "apiKey": secret}, status=201)


@routes.get("/v1/accounts/{id}/keys")
async def list_keys(request: web.Request) -> web.Response:
    require_admin(request)
    ctx = context(request)
    account = await ctx.store.get_account(request.match_info["id"])
    return json_response({"data": [key_json(k) for k in await ctx.store.list_api_keys(account.id)]})


@routes.delete("/v1/accounts/{id}/keys/{key_id}")
async def revoke_key(request: web.Request) -> web.Response:
    require_admin(request)
    ctx = context(request)
    account = await ctx.store.get_account(request.match_info["id"])
    await ctx.store.revoke_api_key(account.id, request.match_info["key_id"], ctx.clock())
    ctx.keys.forget_account(account.id)
    return web.Response(status=204)
