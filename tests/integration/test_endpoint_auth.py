"""Calling endpoints their way: OAuth2 client credentials against a real local token endpoint, mTLS
against a real TLS server that requires a client certificate, and static custom headers."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import orjson
import pytest
from aiohttp import web

from relay.samples import sample_event
from tests.helpers.harness import RelayHarness, Tenant
from tests.helpers.kafka import free_port, produce
from tests.helpers.polling import eventually
from tests.helpers.receiver import Received, RecordingReceiver
from tests.helpers.tls import Authority, server_context

pytestmark = pytest.mark.kafka


class TokenEndpoint:
    """A client-credentials token endpoint on 127.0.0.1: one client, numbered tokens, revocable."""

    def __init__(self, client_id: str, secret: str) -> None:
        self.client_id, self.secret = client_id, secret
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.requests: list[dict[str, str]] = []
        self.failing = False
        self._numbers = itertools.count(1)
        self.url = ""

    async def start(self) -> TokenEndpoint:
        app = web.Application()
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/token"  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.requests.append({k: str(v) for k, v in form.items()})
        if self.failing:
            return web.json_response({"error": "temporarily_unavailable"}, status=500)
        expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
        if request.headers.get("authorization") != expected or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        token = f"tok-{next(self._numbers)}"
        self.issued.append(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def valid(self, authorization: str | None) -> bool:
        token = (authorization or "").removeprefix("Bearer ")
        return token in self.issued and token not in self.revoked


async def send(relay: RelayHarness, tenant: Tenant, count: int, prefix: str) -> None:
    events = [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"{prefix}{i}") for i in range(count)]
    await produce(relay.settings.kafka_bootstrap, relay.topic, [orjson.dumps(e) for e in events])


async def test_oauth2_client_credentials_are_fetched_cached_refreshed_on_401_and_never_shown(
        relay: RelayHarness) -> None:
    tokens = await TokenEndpoint("relay-client", "s3cret-value").start()

    def respond(received: Received) -> int:
        return 200 if tokens.valid(received.headers.get("authorization")) else 401

    receiver = await RecordingReceiver(responder=respond).start()
    try:
        tenant = await relay.tenant()
        oauth = {"tokenUrl": tokens.url, "clientId": "relay-client", "clientSecret": "s3cret-value",
                 "scope": "webhooks:write"}
        for bad, field in (({**oauth, "clientSecret": "wrong"}, "oauth2.tokenUrl"),
                           ({**oauth, "tokenUrl": f"http://127.0.0.1:{free_port()}/token"}, "oauth2.tokenUrl"),
                           ({**oauth, "tokenUrl": "ftp://127.0.0.1/token"}, "oauth2.tokenUrl"),
                           ({"tokenUrl": tokens.url}, "oauth2.clientId")):
            status, err = await tenant.api.call("POST", "/v1/callbacks",
                                                {"name": "x", "url": receiver.url, "oauth2": bad})
            assert status == 400 and err["error"]["field"] == field, (bad, err)
            assert "s3cret-value" not in orjson.dumps(err).decode()

        callback = await tenant.add_callback(receiver, maxBatchSize=1, oauth2=oauth)
        shown = orjson.dumps(callback).decode()
        assert callback["auth"]["oauth2"]["clientId"] == "relay-client" and "s3cret-value" not in shown
        assert tokens.requests[0]["scope"] == "webhooks:write"
        await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])
        await send(relay, tenant, 3, "a")
        await receiver.wait_events(3, timeout=30)
        used = {r.headers["authorization"] for r in receiver.delivered()}
        assert len(used) == 1, "the token is cached, not fetched per POST"

        tokens.revoked.add(used.pop().removeprefix("Bearer "))  # the endpoint stops accepting it: 401
        await send(relay, tenant, 1, "b")
        await receiver.wait_events(4, timeout=30)
        assert receiver.requests[-2].status == 401 and receiver.requests[-1].status == 200
        assert tokens.valid(receiver.requests[-1].headers["authorization"])

        tokens.failing = True  # no token to be had: the attempt records why, without the secret
        tokens.revoked.update(tokens.issued)
        await send(relay, tenant, 1, "c")

        async def token_error() -> Any:
            _, page = await tenant.api.call("GET", f"/v1/callbacks/{callback['id']}/attempts?outcome=retry")
            return [a for a in page["data"] if (a["error"] or "").startswith("oauth2:")]

        failed = await eventually(token_error, timeout=30, what="an attempt failing for want of a token")
        assert "token endpoint answered 500" in failed[0]["error"]
        assert "s3cret-value" not in orjson.dumps(failed).decode()
    finally:
        await receiver.stop()
        await tokens.stop()


async def test_mtls_with_a_custom_ca_reaches_an_endpoint_that_requires_a_client_certificate(
        relay: RelayHarness) -> None:
    server_ca, client_ca = Authority("endpoint CA"), Authority("client CA")
    client = client_ca.issue("relay", server=True)
    receiver = await RecordingReceiver(tls=server_context(server_ca.issue("127.0.0.1", server=True),
                                                          client_ca)).start()
    try:
        tenant = await relay.tenant()
        mtls = {"certificate": client.certificate, "key": client.key, "ca": server_ca.pem}
        other_key = client_ca.issue("other", server=False).key
        for bad, field in (({**mtls, "certificate": "not a pem"}, "mtls.certificate"),
                           ({**mtls, "key": other_key}, "mtls.key"),
                           ({**mtls, "ca": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"},
                            "mtls.ca")):
            status, err = await tenant.api.call("POST", "/v1/callbacks", {"name": "x", "url": receiver.url,
                                                                         "mtls": bad})
            assert status == 400 and err["error"]["field"] == field, (bad, err)

        callback = await tenant.add_callback(receiver, maxBatchSize=1, mtls=mtls)
        assert callback["auth"]["mtls"]["customCa"] is True and "relay" in callback["auth"]["mtls"]["subject"]
        assert "PRIVATE KEY" not in orjson.dumps(callback).decode()
        await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])
        await send(relay, tenant, 2, "m")
        await receiver.wait_events(2, timeout=30)
        assert all(r.verified for r in receiver.delivered())

        # Without the certificate (and without the CA) the endpoint cannot be reached: a test send says why.
        _, patched = await tenant.api.call("PATCH", f"/v1/callbacks/{callback['id']}", {"mtls": None}, expect=200)
        assert patched["auth"]["mtls"] is None
        _, answer = await tenant.api.call("POST", f"/v1/callbacks/{callback['id']}/test", {}, expect=200)
        assert answer["ok"] is False and answer["status"] is None and answer["error"]
    finally:
        await receiver.stop()


async def test_custom_headers_are_sent_and_never_replace_relays_own(relay: RelayHarness,
                                                                    receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    for bad, field in (({"webhook-id": "x"}, "headers.webhook-id"), ({"Content-Type": "text/plain"},
                       "headers.Content-Type"), ({"bad name": "x"}, "headers.bad name"), ({"X-Empty": ""},
                       "headers.X-Empty")):
        status, err = await tenant.api.call("POST", "/v1/callbacks", {"name": "x", "url": receiver.url,
                                                                     "headers": bad})
        assert status == 400 and err["error"]["field"] == field, (bad, err)
    callback = await tenant.add_callback(receiver, headers={"X-Tenant": "acme", "Authorization": "Bearer static-1"})
    assert callback["auth"]["headers"] == ["x-tenant", "authorization"]
    assert "static-1" not in orjson.dumps(callback).decode()
    await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])
    await send(relay, tenant, 2, "h")
    await receiver.wait_events(2, timeout=30)
    request = receiver.delivered()[-1]
    assert request.headers["x-tenant"] == "acme" and request.headers["authorization"] == "Bearer static-1"
    assert request.verified is True
