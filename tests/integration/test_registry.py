"""The registry API end to end: accounts and keys, callbacks with the ownership handshake,
rotation, subscriptions, tenant isolation, SSRF rules and input errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest

from relay.samples import sample_event
from relay.verify import NoMatchingSignature, verify
from tests.helpers.harness import RelayHarness, Tenant, settings_for
from tests.helpers.kafka import KafkaBroker, produce
from tests.helpers.receiver import RecordingReceiver
from tests.helpers.resolver import StaticResolver

pytestmark = pytest.mark.kafka


async def send(harness: RelayHarness, tenant: Tenant, count: int = 1, kind: str = "EmailBounced",
               key: str = "sub-1", **info: Any) -> list[dict[str, Any]]:
    events = []
    for i in range(count):
        event = sample_event(kind, mid=tenant.mid, subscriber_key=key, message_key=f"{i:05d}")
        event["info"].update(info)
        events.append(event)
    await produce(harness.settings.kafka_bootstrap, harness.topic, [orjson.dumps(e) for e in events],
                  [key.encode()] * count)
    return events


async def test_lifecycle_with_handshake_unverified_callbacks_receive_nothing(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    _, cb = await tenant.api.call("POST", "/v1/callbacks", {"name": "crm", "url": receiver.url}, expect=201)
    assert cb["verified"] is False and cb["secret"].startswith("whsec_")
    receiver.secrets.append(cb["secret"])
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.EmailBounced"])
    await receiver.wait_for(lambda: bool(receiver.handshakes))
    assert receiver.handshakes[0]["callbackId"] == cb["id"]

    await relay.refresh_routing()
    await send(relay, tenant, key="before-verify")
    await relay.settled(b"before-verify")
    [event] = await tenant.timeline("before-verify")
    assert event["deliveries"] == [], "an unverified callback must get no delivery job"
    assert receiver.requests == [], "an unverified callback must receive no events"

    # the ENS form of the verify body is accepted too
    key = receiver.handshakes[0]["verificationKey"]
    _, verified = await tenant.api.call("POST", f"/v1/callbacks/{cb['id']}/verify",
                                        {"callbackId": cb["id"], "verificationKey": key}, expect=200)
    assert verified["verified"] is True
    status, err = await tenant.api.call("POST", f"/v1/callbacks/{cb['id']}/verify",
                                        {"verificationKey": key})
    assert (status, err["error"]["code"]) == (409, "already_verified")

    await send(relay, tenant, key="after-verify")
    events = await receiver.wait_events(1, timeout=10)
    assert events[-1]["info"]["subscriberKey"] == "after-verify"
    _, shown = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}", expect=200)
    assert "secret" not in shown


async def test_verification_key_expires_after_four_hours_and_can_be_reissued(
        kafka: KafkaBroker, tmp_path: Path, receiver: RecordingReceiver) -> None:
    offset = [0.0]
    harness = RelayHarness(settings_for(kafka.bootstrap, tmp_path), clock=lambda: time.time() + offset[0])
    await harness.start()
    try:
        tenant = await harness.tenant()
        _, cb = await tenant.api.call("POST", "/v1/callbacks", {"name": "x", "url": receiver.url}, expect=201)
        await receiver.wait_for(lambda: bool(receiver.handshakes))
        old_key = receiver.handshakes[0]["verificationKey"]
        offset[0] = 4 * 3600 + 1
        status, err = await tenant.api.call("POST", f"/v1/callbacks/{cb['id']}/verify",
                                            {"verificationKey": old_key})
        assert (status, err["error"]["code"], err["error"]["field"]) == (400, "verification_expired",
                                                                         "verificationKey")
        await tenant.api.call("POST", f"/v1/callbacks/{cb['id']}/verification", expect=202)
        await receiver.wait_for(lambda: len(receiver.handshakes) == 2)
        new_key = receiver.handshakes[1]["verificationKey"]
        assert new_key != old_key
        status, _ = await tenant.api.call("POST", f"/v1/callbacks/{cb['id']}/verify", {"verificationKey": old_key})
        assert status == 400
        await tenant.api.call("POST", f"/v1/callbacks/{cb['id']}/verify", {"verificationKey": new_key}, expect=200)
        status, _ = await tenant.api.call("POST", f"/v1/callbacks/{cb['id']}/verify", {"verificationKey": new_key})
        assert status == 409, "a verification key works once"
    finally:
        await harness.close()


async def test_rotation_signs_with_both_secrets_during_the_overlap_then_only_the_new(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver, maxBatchSize=1)
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
    old = cb["secret"]
    _, rotated = await tenant.api.call("POST", f"/v1/callbacks/{cb['id']}/rotate-secret",
                                       {"overlapSeconds": 3}, expect=200)
    new = rotated["secret"]
    assert new != old
    await relay.refresh_routing()
    await send(relay, tenant, key="during")
    await receiver.wait_events(1)
    during = receiver.delivered()[-1]
    assert len(during.headers["webhook-signature"].split()) == 2
    verify(old, during.headers, during.body)
    verify(new, during.headers, during.body)

    await asyncio.sleep(3.2)
    await send(relay, tenant, key="after")
    await receiver.wait_events(2)
    after = receiver.delivered()[-1]
    assert len(after.headers["webhook-signature"].split()) == 1
    verify(new, after.headers, after.body)
    with pytest.raises(NoMatchingSignature):
        verify(old, after.headers, after.body)


async def test_every_route_isolates_tenants(relay: RelayHarness, receiver: RecordingReceiver) -> None:
    alice = await relay.tenant(name="Alice")
    bob = await relay.tenant(name="Bob")
    cb = await alice.add_callback(receiver)
    sub = await alice.subscribe(cb["id"], ["TransactionalSendEvents.*"])
    cid, sid = cb["id"], sub["id"]
    for method, path, body in [
        ("GET", f"/v1/callbacks/{cid}", None),
        ("PATCH", f"/v1/callbacks/{cid}", {"name": "mine now"}),
        ("DELETE", f"/v1/callbacks/{cid}", None),
        ("POST", f"/v1/callbacks/{cid}/verify", {"verificationKey": "x"}),
        ("POST", f"/v1/callbacks/{cid}/verification", None),
        ("POST", f"/v1/callbacks/{cid}/rotate-secret", {}),
        ("GET", f"/v1/subscriptions/{sid}", None),
        ("PATCH", f"/v1/subscriptions/{sid}", {"name": "mine"}),
        ("POST", f"/v1/subscriptions/{sid}/pause", {}),
        ("POST", f"/v1/subscriptions/{sid}/resume", {}),
        ("DELETE", f"/v1/subscriptions/{sid}", None),
    ]:
        status, err = await bob.api.call(method, path, body)
        assert status == 404, (method, path, status, err)
        assert err["error"]["code"] == "not_found"
    status, _ = await bob.api.call("POST", "/v1/subscriptions", {
        "name": "steal", "callbackId": cid, "eventCategoryTypes": ["EngagementEvents.*"]})
    assert status == 404
    _, listed = await bob.api.call("GET", "/v1/callbacks", expect=200)
    assert listed["data"] == []
    _, listed = await bob.api.call("GET", "/v1/subscriptions", expect=200)
    assert listed["data"] == []
    # account keys cannot use admin routes; no key at all is 401
    status, _ = await bob.api.call("GET", "/v1/accounts")
    assert status == 403
    async with aiohttp.ClientSession() as session, session.get(relay.base + "/v1/callbacks") as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "unauthorized"


async def test_api_keys_are_several_per_account_and_revocable(relay: RelayHarness) -> None:
    tenant = await relay.tenant()
    account_id = tenant.account["id"]
    _, key = await relay.admin.call("POST", f"/v1/accounts/{account_id}/keys", {"name": "ci"}, expect=201)
    second = type(tenant.api)(relay.base, key["apiKey"])
    try:
        await second.call("GET", "/v1/callbacks", expect=200)
        _, keys = await relay.admin.call("GET", f"/v1/accounts/{account_id}/keys", expect=200)
        assert {k["name"] for k in keys["data"]} == {"initial", "ci"}
        assert all("apiKey" not in k for k in keys["data"])
        await relay.admin.call("DELETE", f"/v1/accounts/{account_id}/keys/{key['keyId']}")
        status, _ = await second.call("GET", "/v1/callbacks")
        assert status == 401
        await tenant.api.call("GET", "/v1/callbacks", expect=200)
    finally:
        await second.close()


async def test_a_key_revoked_through_another_instance_stops_working_here_within_the_cache_time(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    """This instance remembers a key's account for ``api_key_cache``; a revocation it did not see
    itself (written to the store, as another instance would) takes effect once that has passed."""
    offset = [0.0]
    harness = RelayHarness(settings_for(kafka.bootstrap, tmp_path, api_key_cache=60),
                           clock=lambda: time.time() + offset[0])
    await harness.start()
    try:
        tenant = await harness.tenant()
        account_id = tenant.account["id"]
        _, key = await harness.admin.call("POST", f"/v1/accounts/{account_id}/keys", {"name": "elsewhere"},
                                          expect=201)
        other = type(tenant.api)(harness.base, key["apiKey"])
        try:
            await other.call("GET", "/v1/callbacks", expect=200)
            assert harness.relay is not None
            await harness.relay.store.revoke_api_key(account_id, key["keyId"], time.time())
            await other.call("GET", "/v1/callbacks", expect=200)  # remembered: the store is not asked
            offset[0] = 61
            status, _ = await other.call("GET", "/v1/callbacks")
            assert status == 401, "the remembered account expires with the cache time"
            await tenant.api.call("GET", "/v1/callbacks", expect=200)
        finally:
            await other.close()
    finally:
        await harness.close()


async def test_subscription_changes_reach_routing_without_a_restart(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    """No manual refresh: the router reloads by itself (every 0.5 s; waited for, not slept on)."""
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver, maxBatchSize=1)
    sub = await tenant.subscribe(cb["id"], ["TransactionalSendEvents.EmailBounced"])
    await relay.routing_caught_up()
    await send(relay, tenant, key="live")
    await receiver.wait_events(1, timeout=10)

    await tenant.api.call("POST", f"/v1/subscriptions/{sub['id']}/pause", {"statusReason": "maintenance"},
                          expect=200)
    await relay.routing_caught_up()
    await send(relay, tenant, key="while-paused")
    await relay.settled(b"while-paused")
    [dropped] = await tenant.timeline("while-paused")
    assert dropped["deliveries"] == [], "a paused subscription drops the event: no job"
    await tenant.api.call("POST", f"/v1/subscriptions/{sub['id']}/resume", expect=200)
    await relay.routing_caught_up()
    await send(relay, tenant, key="resumed")
    await receiver.wait_events(2, timeout=10)
    assert [e["info"]["subscriberKey"] for e in receiver.delivered_events()] == ["live", "resumed"]


async def test_paused_with_hold_keeps_events_and_delivers_them_in_order_on_resume(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver, maxBatchSize=4)
    sub = await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"], status="paused", onPause="hold")
    await relay.refresh_routing()
    sent = await send(relay, tenant, count=10, key="held")
    await relay.settled(b"held")
    held = await tenant.timeline("held")
    assert len(held) == 10
    assert all([d["state"] for d in e["deliveries"]] == ["held"] for e in held), held
    assert receiver.requests == []
    await tenant.api.call("POST", f"/v1/subscriptions/{sub['id']}/resume", expect=200)
    events = await receiver.wait_events(10, timeout=10)
    assert [e["info"]["messageKey"] for e in events] == [e["info"]["messageKey"] for e in sent]


async def test_filters_narrow_what_arrives(relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver, maxBatchSize=1)
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.EmailBounced"],
                           filters=["bounceCode=HARD", "definitionKey!=newsletter"])
    await relay.refresh_routing()
    await send(relay, tenant, key="soft", bounceCode="SOFT")
    await send(relay, tenant, key="hard", bounceCode="HARD")
    events = await receiver.wait_events(1)
    await relay.settled(b"soft")
    [soft] = await tenant.timeline("soft")
    assert soft["deliveries"] == [], "filtered out: no job"
    assert [e["info"]["subscriberKey"] for e in receiver.delivered_events()] == ["hard"]
    assert events[0]["info"]["bounceCode"] == "HARD"


async def test_deleting_a_callback_in_use_is_refused_and_limits_hold(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver)
    sub = await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"], name="only")
    status, err = await tenant.api.call("DELETE", f"/v1/callbacks/{cb['id']}")
    assert (status, err["error"]["code"]) == (409, "conflict")
    status, err = await tenant.api.call("POST", "/v1/subscriptions", {
        "name": "only", "callbackId": cb["id"], "eventCategoryTypes": ["EngagementEvents.*"]})
    assert status == 409, "subscription names are unique per account"
    await tenant.api.call("DELETE", f"/v1/subscriptions/{sub['id']}", expect=None)
    status, _ = await tenant.api.call("GET", f"/v1/subscriptions/{sub['id']}")
    assert status == 404
    async with aiohttp.ClientSession() as session, session.delete(
            f"{relay.base}/v1/callbacks/{cb['id']}",
            headers={"authorization": f"Bearer {tenant.api.key}"}) as response:
        assert response.status == 204


async def test_at_most_200_subscriptions_per_callback(relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver)
    for i in range(200):
        await tenant.subscribe(cb["id"], ["EngagementEvents.EmailOpen"], name=f"s{i}")
    status, err = await tenant.api.call("POST", "/v1/subscriptions", {
        "name": "one-too-many", "callbackId": cb["id"], "eventCategoryTypes": ["EngagementEvents.*"]})
    assert status == 409 and "200" in err["error"]["message"]


@pytest.mark.parametrize("url", [
    "http://hooks.example.com/x",  # http for a host not on the allow-list
    "https://10.0.0.8/x",
    "https://192.168.1.20/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://0.0.0.0/x",
    "https://224.0.0.5/x",
    "https://localhost/x",
    "https://admin:pw@hooks.example.com/x",
    "https://hooks.example.com/x?token=1",
    "ftp://hooks.example.com/x",
    "not a url",
])
async def test_ssrf_tricks_are_refused_at_registration(relay: RelayHarness, url: str) -> None:
    tenant = await relay.tenant()
    status, err = await tenant.api.call("POST", "/v1/callbacks", {"name": "x", "url": url})
    assert status == 400, (url, err)
    assert err["error"]["field"] == "url"


PRIVATE_TARGETS = ["10.0.0.8", "127.0.0.1", "169.254.169.254", "::1", "fd00::1", "::ffff:169.254.169.254",
                   "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "::10.0.0.8"]


async def test_names_that_resolve_to_private_addresses_are_refused_at_registration_and_connect(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    """DNS from a static test resolver (not /etc/hosts): each name points at one private target."""
    table = {f"h{i}.example": [address] for i, address in enumerate(PRIVATE_TARGETS)}
    table["mixed.example"] = ["93.184.216.34", "::ffff:10.0.0.8"]
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path, url_allowlist=[]),
                                 resolver=StaticResolver(table)).start()
    try:
        tenant = await harness.tenant()
        for name in table:
            status, err = await tenant.api.call("POST", "/v1/callbacks", {"name": "x", "url": f"https://{name}/hook"})
            assert status == 400 and err["error"]["code"] == "unsafe_url", (name, err)
        assert harness.relay is not None
        for name in (n for n in table if n != "mixed.example"):  # mixed: the public address stays usable
            outcome = await harness.relay.client.post(f"https://{name}/hook", b"[]", {}, timeout=5)
            assert outcome.status is None and "may not call" in (outcome.error or ""), (name, outcome)
    finally:
        await harness.close()


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/callbacks", {"url": "https://hooks.example.com/x"}, "name"),
    ("/v1/callbacks", {"name": 5, "url": "https://hooks.example.com/x"}, "name"),
    ("/v1/callbacks", {"name": "x" * 201, "url": "https://hooks.example.com/x"}, "name"),
    ("/v1/callbacks", {"name": "x", "url": "https://hooks.example.com/x", "maxBatchSize": 0}, "maxBatchSize"),
    ("/v1/callbacks", {"name": "x", "url": "https://hooks.example.com/x", "maxBatchSize": "10"}, "maxBatchSize"),
    ("/v1/callbacks", {"name": "x", "url": "https://hooks.example.com/x", "colour": "red"}, "colour"),
    ("/v1/callbacks", {"name": "x", "url": "https://hooks.example.com/x", "retrySchedule": [-1]}, "retrySchedule"),
    ("/v1/subscriptions", {"name": "s", "callbackId": "cb_x"}, "eventCategoryTypes"),
    ("/v1/subscriptions", {"name": "s", "callbackId": "cb_x", "eventCategoryTypes": ["Nope.Nope"]},
     "eventCategoryTypes"),
    ("/v1/subscriptions", {"name": "s", "callbackId": "cb_x", "eventCategoryTypes": "EngagementEvents.*"},
     "eventCategoryTypes"),
    ("/v1/subscriptions", {"name": "s", "callbackId": "cb_x", "eventCategoryTypes": ["EngagementEvents.*"],
                           "filters": ["colour=red"]}, "filters"),
    ("/v1/subscriptions", {"name": "s", "callbackId": "cb_x", "eventCategoryTypes": ["EngagementEvents.*"],
                           "filters": ["bounceCode"]}, "filters"),
    ("/v1/subscriptions", {"name": "s", "callbackId": "cb_x", "eventCategoryTypes": ["EngagementEvents.*"],
                           "status": "sleeping"}, "status"),
])
async def test_bad_input_is_a_400_naming_the_field(relay: RelayHarness, path: str, body: dict, field: str) -> None:
    tenant = await relay.tenant()
    status, err = await tenant.api.call("POST", path, body)
    assert status == 400, err
    assert err["error"]["field"] == field
    assert err["error"]["message"]


async def test_malformed_and_oversized_bodies(relay: RelayHarness) -> None:
    tenant = await relay.tenant()
    headers = {"authorization": f"Bearer {tenant.api.key}", "content-type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(relay.base + "/v1/callbacks", data=b"{nope", headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "malformed_json"
        async with session.post(relay.base + "/v1/callbacks", data=b"[1]", headers=headers) as r:
            assert r.status == 400
        async with session.post(relay.base + "/v1/callbacks", data=b"x" * 400_000, headers=headers) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "too_large"
        async with session.get(relay.base + "/v1/nothing-here", headers=headers) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"


async def test_secrets_are_encrypted_at_rest(relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver)
    secret_b64 = cb["secret"].removeprefix("whsec_").encode()
    data_dir = Path(relay.settings.data_dir)
    url = relay.settings.resolved_store_url
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT secrets, NULL FROM callbacks UNION ALL "
                                "SELECT convert_to(key_hash, 'UTF8'), convert_to(prefix, 'UTF8') FROM api_keys")
            raw = b"".join(bytes(v) for row in rows for v in row if v is not None)
    else:
        raw = b"".join(p.read_bytes() for p in data_dir.glob("relay.db*"))
    assert raw, "the stored rows exist"
    assert secret_b64 not in raw and cb["secret"].encode() not in raw
    assert tenant.api.key.encode() not in raw
    key_file = data_dir / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


async def test_ed25519_callbacks_are_verifiable_with_the_public_key_alone(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver, ed25519=True, ensSignature=True, maxBatchSize=1)
    [public] = cb["publicKeys"]
    assert public.startswith("whpk_")
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
    await send(relay, tenant, key="signed")
    await receiver.wait_events(1)
    request = receiver.delivered()[0]
    versions = sorted(entry.split(",")[0] for entry in request.headers["webhook-signature"].split())
    assert versions == ["v1", "v1a"]
    verify(public, request.headers, request.body)
    from relay.verify import verify_ens

    verify_ens(cb["secret"], request.headers["x-sfmc-ens-signature"], request.body)


async def test_patch_writes_only_its_fields_and_if_match_guards_against_stale_reads(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver)
    headers = {"authorization": f"Bearer {tenant.api.key}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{relay.base}/v1/callbacks/{cb['id']}", headers=headers) as r:
            etag = r.headers["ETag"]
            assert (await r.json())["enabled"] is True
        assert relay.relay is not None  # the relay disables it meanwhile (as after a 410)
        await relay.relay.store.set_callback_enabled(cb["id"], False, "gone: the receiver answered 410")

        async with session.patch(f"{relay.base}/v1/callbacks/{cb['id']}", json={"name": "renamed"},
                                 headers={**headers, "If-Match": etag}) as r:
            assert r.status == 412 and (await r.json())["error"]["code"] == "precondition_failed"
        async with session.patch(f"{relay.base}/v1/callbacks/{cb['id']}", json={"name": "renamed"},
                                 headers=headers) as r:
            assert r.status == 200
            body = await r.json()
            assert body["name"] == "renamed"
            assert body["enabled"] is False, "a PATCH of the name must not re-enable the callback"
            assert body["disabledReason"].startswith("gone")
            newer = r.headers["ETag"]
        assert newer != etag
        async with session.patch(f"{relay.base}/v1/callbacks/{cb['id']}", json={"enabled": True},
                                 headers={**headers, "If-Match": newer}) as r:
            assert r.status == 200 and (await r.json())["enabled"] is True
