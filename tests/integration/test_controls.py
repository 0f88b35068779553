"""Endpoint controls, end to end on a real broker and real receivers: test sends, recovering a time
window as a durable operation (pause, resume), rate limits and a 429's Retry-After."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from relay.samples import sample_event
from tests.helpers.harness import RelayHarness, Tenant, settings_for
from tests.helpers.kafka import KafkaBroker, produce
from tests.helpers.polling import eventually
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka


async def send(harness: RelayHarness, events: list[dict[str, Any]]) -> None:
    await produce(harness.settings.kafka_bootstrap, harness.topic, [orjson.dumps(e) for e in events],
                  [e["info"]["subscriberKey"].encode() for e in events])


async def subscribed(relay: RelayHarness, receiver: RecordingReceiver, **fields: Any) -> tuple[Tenant, str]:
    tenant = await relay.tenant()
    callback = await tenant.add_callback(receiver, **fields)
    await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])
    return tenant, callback["id"]


async def test_a_test_send_is_signed_marked_and_reports_the_answer(relay: RelayHarness,
                                                                   receiver: RecordingReceiver) -> None:
    tenant, cb = await subscribed(relay, receiver)
    _, answer = await tenant.api.call("POST", f"/v1/callbacks/{cb}/test",
                                      {"eventType": "TransactionalSendEvents.EmailBounced"}, expect=200)
    assert answer["ok"] is True and answer["status"] == 200 and answer["latencyMs"] >= 0
    request = receiver.delivered()[-1]
    assert request.verified is True, "the test send must verify like any delivery"
    assert request.headers["webhook-test"] == "true" and request.headers["webhook-id"] == answer["webhookId"]
    [event] = request.json
    assert event["eventId"] == answer["eventId"] and event["eventId"].startswith("test_")
    assert event["eventCategoryType"] == "TransactionalSendEvents.EmailBounced"
    assert event["mid"] == int(tenant.mid)

    receiver.responder = lambda r: web.Response(status=503, text="down for maintenance")
    _, failed = await tenant.api.call("POST", f"/v1/callbacks/{cb}/test", {}, expect=200)
    assert failed["ok"] is False and failed["status"] == 503
    assert failed["responseExcerpt"] == "down for maintenance"

    status, err = await tenant.api.call("POST", f"/v1/callbacks/{cb}/test", {"eventType": "Nope.Never"})
    assert status == 400 and err["error"]["field"] == "eventType"
    _, unverified = await tenant.api.call("POST", "/v1/callbacks", {"name": "new", "url": receiver.url},
                                          expect=201)
    status, err = await tenant.api.call("POST", f"/v1/callbacks/{unverified['id']}/test", {})
    assert status == 409, err


async def test_recovering_a_window_resends_it_in_order_marked_and_pausable(relay: RelayHarness,
                                                                           receiver: RecordingReceiver) -> None:
    tenant, cb = await subscribed(relay, receiver, maxBatchSize=1)
    now_ms = int(time.time() * 1000)
    old = [sample_event("EmailSent", mid=tenant.mid, subscriber_key="old", timestamp_ms=now_ms - 3_600_000)]
    recent = [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"k{i % 2}", message_key=f"m{i}",
                           timestamp_ms=now_ms - 60_000 + i) for i in range(6)]
    await send(relay, old + recent)
    await receiver.wait_events(7, timeout=30)
    originals = {e["eventId"]: r.headers["webhook-id"] for r in receiver.delivered() for e in r.json}

    for bad, field in (({"since": 10, "until": 5}, "until"), ({"since": -1, "until": 5}, "since"),
                       ({"since": 1, "until": 5, "ratePerSecond": 0}, "ratePerSecond"),
                       ({"since": 1, "until": 5, "eventTypes": ["Nope.Never"]}, "eventTypes[0]")):
        status, err = await tenant.api.call("POST", f"/v1/callbacks/{cb}/recover", bad)
        assert status == 400 and err["error"]["field"] == field, (bad, err)

    since, until = (now_ms - 120_000) / 1000, time.time() + 1
    _, op = await tenant.api.call("POST", f"/v1/callbacks/{cb}/recover",
                                  {"since": since, "until": until, "ratePerSecond": 1}, expect=202)
    assert op["kind"] == "recover" and op["ratePerSecond"] == 1

    async def progressed() -> Any:
        _, current = await tenant.api.call("GET", f"/v1/operations/{op['id']}", expect=200)
        return current if current["progress"]["done"] >= 1 else None

    running = await eventually(progressed, what="the recovery making progress")
    assert running["progress"]["total"] == 6 and running["etaSeconds"] is not None
    _, paused = await tenant.api.call("POST", f"/v1/operations/{op['id']}/pause", expect=200)
    assert paused["state"] == "paused"
    status, _ = await tenant.api.call("POST", f"/v1/operations/{op['id']}/pause")
    assert status == 409
    _, resumed = await tenant.api.call("POST", f"/v1/operations/{op['id']}/resume", expect=200)
    assert resumed["state"] == "queued"

    async def done() -> Any:
        _, current = await tenant.api.call("GET", f"/v1/operations/{op['id']}", expect=200)
        return current if current["state"] == "done" else None

    finished = await eventually(done, timeout=60, what="the recovery finishing")
    assert finished["progress"]["done"] >= 6 and finished["etaSeconds"] is None
    recovered = [r for r in receiver.delivered() if r.headers.get("webhook-recovered") == "true"]
    assert all(r.verified for r in recovered)
    events = [e for r in recovered for e in r.json]
    assert {e["eventId"] for e in events} == {e for e in originals if e != _event_id_of(receiver, "old")}
    for key in ("k0", "k1"):
        keys = [e["info"]["messageKey"] for e in events if e["info"]["subscriberKey"] == key]
        first_seen = list(dict.fromkeys(keys))
        assert first_seen == sorted(first_seen), f"per-key order broke for {key}: {keys}"
    assert all(r.headers["webhook-id"] != originals[r.json[0]["eventId"]] for r in recovered)


def _event_id_of(receiver: RecordingReceiver, subscriber_key: str) -> str:
    return next(e["eventId"] for e in receiver.delivered_events() if e["info"]["subscriberKey"] == subscriber_key)


async def test_a_rate_limit_holds_without_spending_attempts(kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver().start()
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path / "data")).start()
    try:
        tenant, cb = await subscribed(harness, receiver, maxBatchSize=50)
        for bad, field in (({"eventsPerSecond": -1}, "rateLimit.eventsPerSecond"), ({}, "rateLimit"),
                           ({"perHour": 3}, "rateLimit")):
            status, err = await tenant.api.call("PATCH", f"/v1/callbacks/{cb}", {"rateLimit": bad})
            assert status == 400 and err["error"]["field"] == field, (bad, err)
        _, patched = await tenant.api.call("PATCH", f"/v1/callbacks/{cb}",
                                           {"rateLimit": {"eventsPerSecond": 20}}, expect=200)
        assert patched["rateLimit"] == {"eventsPerSecond": 20.0, "requestsPerSecond": None}
        await harness.routing_caught_up()
        await send(harness, [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"s{i}") for i in range(100)])
        await receiver.wait_events(100, timeout=60)
        times = sorted(r.at for r in receiver.delivered())
        # 20 a second with a burst of 20: 100 events need at least (100 - 20) / 20 = 4 s.
        assert times[-1] - times[0] >= 4.0 * 0.9, f"100 events in {times[-1] - times[0]:.2f}s at 20/s"
        assert max(len(r.json) for r in receiver.delivered()) <= 20, "a batch larger than one second's worth"
        _, attempts = await tenant.api.call("GET", f"/v1/callbacks/{cb}/attempts?limit=1000", expect=200)
        assert all(a["outcome"] == "delivered" for a in attempts["data"]), "throttling spent an attempt"
    finally:
        await harness.close()
        await receiver.stop()


async def test_a_429_with_retry_after_pauses_the_callback(relay: RelayHarness, receiver: RecordingReceiver) -> None:
    """Other keys are not held back by per-key order, so only the pause keeps them from going out."""
    tenant, cb = await subscribed(relay, receiver, maxBatchSize=1)
    answers = iter([web.Response(status=429, headers={"retry-after": "3"})])
    receiver.responder = lambda r: next(answers, 200)
    await send(relay, [sample_event("EmailSent", mid=tenant.mid, subscriber_key="first")])
    await receiver.wait_for(lambda: len(receiver.requests) >= 1, timeout=30)
    refused = receiver.requests[0]
    assert refused.status == 429
    await send(relay, [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"other{i}") for i in range(3)])
    await receiver.wait_events(4, timeout=30)
    others = [r.at for r in receiver.delivered() if r.json[0]["info"]["subscriberKey"].startswith("other")]
    assert min(others) >= refused.at + 3 * 0.9, "a send went out during the Retry-After pause"

    async def throttle_recorded() -> Any:
        _, callback = await tenant.api.call("GET", f"/v1/callbacks/{cb}", expect=200)
        return callback["throttledUntil"]

    until = await eventually(throttle_recorded, what="throttledUntil on the callback")
    assert until >= refused.at + 2.5
