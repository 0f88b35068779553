"""/v1/accounts — the admin creates accounts; each gets its first API key, shown once."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api import body
from relay.api.auth import require_admin
from relay.api.context import context
from relay.api.errors import bad_request, json_response
from relay.crypto import hash_api_key, new_api_key
from relay.ids import new_id
from relay.store.models import Account

routes = web.RouteTableDef()


def account_json(account: Account) -> dict[str, Any]:
    return {"id": account.id, "name": account.name, "mid": account.mid,
            "createdAt": account.created_at}


@routes.post("/v1/accounts")
async def create_account(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body.read_object(request, {"name", "mid"})
    name = body.string(data, "name")
    mid = data.get("mid")
    if isinstance(mid, int) and not isinstance(mid, bool) and mid >= 0:
        mid = str(mid)
    if not isinstance(mid, str) or not mid.isdigit() or len(mid) > 20:
        raise bad_request("mid must be the account's numeric MID", field="mid")
    account = Account(new_id("acct"), name, mid, context(request).clock())
    api_key = new_api_key()
    await context(request).store.create_account(account, hash_api_key(api_key))
    return json_response({**account_json(account), "apiKey": api_key}, status=201)


@routes.get("/v1/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    require_admin(request)
    accounts = await context(request).store.list_accounts()
    return json_response({"data": [account_json(a) for a in accounts]})
