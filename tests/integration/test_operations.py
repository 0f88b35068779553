"""On-call and operations: dead letters (list, show, replay, purge), attempt log, callback health,
message status, live stats and the activity stream, retention, and the dead-letter alert."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from relay.samples import sample_event
from tests.helpers.harness import RelayHarness, Tenant, settings_for
from tests.helpers.kafka import KafkaBroker, produce, read_topic
from tests.helpers.polling import eventually
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka


async def send(harness: RelayHarness, tenant: Tenant, events: list[dict[str, Any]]) -> None:
    await produce(harness.settings.kafka_bootstrap, harness.topic, [orjson.dumps(e) for e in events],
                  [e["info"]["subscriberKey"].encode() for e in events])


async def dead_harness(kafka: KafkaBroker, tmp_path: Path, **overrides: Any) -> RelayHarness:
    return await RelayHarness(settings_for(
        kafka.bootstrap, tmp_path, retry_schedule="0,50ms", retry_max_age="500ms",
        circuit_failure_threshold=1000, **overrides)).start()


async def test_dead_letters_can_be_listed_inspected_replayed_and_purged(kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver(
        responder=lambda r: web.Response(status=500, text="upstream exploded")).start()
    harness = await dead_harness(kafka, tmp_path)
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(receiver, maxBatchSize=1)
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        events = [sample_event("EmailBounced", mid=tenant.mid, subscriber_key=f"s{i}") for i in range(3)]
        events.append(sample_event("SmsSent", mid=tenant.mid, subscriber_key="sms"))
        await send(harness, tenant, events)

        async def four_dead() -> Any:
            _, page = await tenant.api.call("GET", "/v1/deadletters?limit=10")
            return page if len(page["data"]) == 4 else None

        page = await eventually(four_dead)
        _, filtered = await tenant.api.call(
            "GET", f"/v1/deadletters?eventType=TransactionalSendEvents.SmsSent&callbackId={cb['id']}", expect=200)
        assert [d["subscriberKey"] for d in filtered["data"]] == ["sms"]
        _, by_reason = await tenant.api.call("GET", "/v1/deadletters?reason=exhausted&limit=2", expect=200)
        assert len(by_reason["data"]) == 2 and by_reason["nextCursor"] is not None
        cursor = by_reason["nextCursor"]
        _, rest = await tenant.api.call("GET", f"/v1/deadletters?reason=exhausted&limit=2&cursor={cursor}")
        assert len(rest["data"]) == 2
        assert {d["id"] for d in by_reason["data"]}.isdisjoint({d["id"] for d in rest["data"]})

        letter_id = filtered["data"][0]["id"]
        _, letter = await tenant.api.call("GET", f"/v1/deadletters/{letter_id}", expect=200)
        assert letter["event"]["eventId"] == letter["eventId"]
        assert len(letter["attempts"]) >= 2
        assert all(a["status"] == 500 and a["responseExcerpt"] == "upstream exploded" for a in letter["attempts"])
        first_webhook_id = letter["webhookId"]

        receiver.responder = None  # the receiver is fixed
        await tenant.api.call("POST", f"/v1/deadletters/{letter_id}/replay", expect=202)
        await receiver.wait_events(1, timeout=15)
        assert receiver.delivered()[0].headers["webhook-id"] == first_webhook_id

        async def delivered_attempts() -> Any:
            _, page = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}/attempts?outcome=delivered")
            return page["data"]

        assert [a["webhookId"] for a in await eventually(delivered_attempts)] == [first_webhook_id]

        bounced = [d["id"] for d in page["data"] if d["eventType"].endswith("EmailBounced")]
        _, started = await tenant.api.call("POST", "/v1/deadletters/replay",
                                           {"ids": bounced[:2], "ratePerSecond": 50}, expect=202)

        async def finished() -> Any:
            _, progress = await tenant.api.call("GET", f"/v1/deadletters/replay/{started['id']}")
            return progress if progress["done"] else None

        progress = await eventually(finished)
        assert progress["replayed"] == 2 and progress["error"] is None
        await receiver.wait_events(3, timeout=15)
        _, purged = await tenant.api.call("POST", "/v1/deadletters/purge",
                                          {"eventType": "TransactionalSendEvents.EmailBounced"}, expect=200)
        assert purged["purged"] == 1
        _, left = await tenant.api.call("GET", "/v1/deadletters", expect=200)
        assert left["data"] == []
    finally:
        await harness.close()
        await receiver.stop()


async def dead_letters(tenant: Tenant, count: int) -> list[dict[str, Any]]:
    async def all_dead() -> Any:
        _, page = await tenant.api.call("GET", "/v1/deadletters?limit=200")
        return page["data"] if len(page["data"]) >= count else None

    return list(await eventually(all_dead, timeout=60, what=f"{count} dead letters"))


async def test_a_bulk_replay_is_a_durable_operation_that_can_be_cancelled(kafka: KafkaBroker,
                                                                          tmp_path: Path) -> None:
    receiver = await RecordingReceiver(responder=lambda r: 500).start()
    harness = await dead_harness(kafka, tmp_path)
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(receiver, maxBatchSize=1)
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        await send(harness, tenant, [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"k{i}")
                                     for i in range(30)])
        await dead_letters(tenant, 30)
        receiver.responder = None

        _, started = await tenant.api.call("POST", "/v1/deadletters/replay", {"all": True, "ratePerSecond": 1},
                                           expect=202)
        assert started["state"] == "queued" and started["kind"] == "redrive"

        async def under_way() -> Any:
            _, op = await tenant.api.call("GET", f"/v1/operations/{started['id']}", expect=200)
            return op if op["progress"]["done"] >= 1 else None

        running = await eventually(under_way, what="the replay making progress")
        assert running["state"] == "running" and running["progress"]["total"] == 30
        _, listed = await tenant.api.call("GET", "/v1/operations?kind=redrive", expect=200)
        assert [op["id"] for op in listed["data"]] == [started["id"]]

        _, cancelled = await tenant.api.call("POST", f"/v1/operations/{started['id']}/cancel", expect=200)
        assert cancelled["state"] == "cancelled" and cancelled["progress"]["done"] < 30
        status, err = await tenant.api.call("POST", f"/v1/operations/{started['id']}/cancel")
        assert status == 409, err

        # The rest, at full speed: when it is done, the cancelled one has long had its next step.
        _, rest = await tenant.api.call("POST", "/v1/deadletters/replay", {"all": True, "ratePerSecond": 1000},
                                        expect=202)

        async def finished() -> Any:
            _, progress = await tenant.api.call("GET", f"/v1/deadletters/replay/{rest['id']}")
            return progress if progress["done"] else None

        assert (await eventually(finished))["state"] == "done"
        await receiver.wait_for(lambda: len({e["eventId"] for e in receiver.delivered_events()}) == 30, timeout=30)
        _, after = await tenant.api.call("GET", f"/v1/deadletters/replay/{started['id']}", expect=200)
        assert after["state"] == "cancelled" and after["done"] is True
        assert after["replayed"] == cancelled["progress"]["done"], "a cancelled replay went on counting"
        _, left = await tenant.api.call("GET", "/v1/deadletters", expect=200)
        assert left["data"] == []
    finally:
        await harness.close()
        await receiver.stop()


async def test_health_says_when_a_waiting_callback_is_tried_next(kafka: KafkaBroker, tmp_path: Path) -> None:
    """A callback waiting out a long retry looks different from a stuck one: nextRetryAt says when."""
    receiver = await RecordingReceiver(responder=lambda r: 503).start()
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path, retry_schedule="0,1h",
                                              retry_max_age="3h")).start()
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(receiver, maxBatchSize=1)
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        started = time.time()
        await send(harness, tenant, [sample_event("EmailSent", mid=tenant.mid, subscriber_key="k")])

        async def waiting() -> Any:
            _, health = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}/health", expect=200)
            return health if health["nextRetryAt"] is not None else None

        health = await eventually(waiting, timeout=30, what="the failed job waiting for its retry")
        assert health["nextRetryAt"] >= started + 3600 * 0.8, "an hour, give or take the 20 % jitter"
        assert health["pending"] == 1 and health["inFlight"] == 0
        _, activity = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}/activity", expect=200)
        assert activity["recentAttempts"][0]["outcome"] == "retry" and activity["recentAttempts"][0]["status"] == 503
        assert sum(b["retry"] for b in activity["series"]) >= 1 and activity["series"][0]["averageLatencyMs"] >= 0
    finally:
        await harness.close()
        await receiver.stop()


async def test_health_attempt_log_and_the_dead_letter_alert(kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver(responder=lambda r: 503).start()
    harness = await dead_harness(kafka, tmp_path, deadletter_alert_threshold=2)
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(receiver, maxBatchSize=1)
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        await send(harness, tenant, [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"k{i}")
                                     for i in range(3)])
        alerts = [orjson.loads(v) for v in await read_topic(kafka.bootstrap, harness.settings.ops_topic, 1)]
        assert alerts[0]["type"] == "deadletters.threshold_crossed" and alerts[0]["threshold"] == 2
        _, health = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}/health", expect=200)
        assert health["successRate"] == 0 and health["attempts"] >= 3
        assert health["lastError"]["status"] == 503
        assert health["circuit"] == "closed" and health["enabled"] is True
        _, failed = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}/attempts?outcome=retry", expect=200)
        assert failed["data"] and all(a["outcome"] == "retry" for a in failed["data"])
        status, err = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}/attempts?outcome=maybe")
        assert status == 400 and err["error"]["field"] == "outcome"
    finally:
        await harness.close()
        await receiver.stop()


async def test_message_status_timeline_stats_and_activity_stream(relay: RelayHarness,
                                                                 receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver, maxBatchSize=10)
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.EmailBounced"])
    sent = sample_event("EmailSent", mid=tenant.mid, subscriber_key="ada", message_key="reset-123")
    bounced = sample_event("EmailBounced", mid=tenant.mid, subscriber_key="ada", message_key="reset-123",
                           timestamp_ms=sent["timestampUTC"] + 1000)
    bounced["info"]["bounceCode"] = "HARD"
    other = sample_event("EmailSent", mid=tenant.mid, subscriber_key="bob", message_key="other")
    await send(relay, tenant, [sent, bounced, other])
    await receiver.wait_events(1)

    async def delivered_timeline() -> Any:
        _, body = await tenant.api.call("GET", "/v1/messages?messageKey=reset-123", expect=200)
        events = body["events"]
        return body if len(events) == 2 and events[1]["deliveries"][0]["state"] == "delivered" else None

    timeline = (await eventually(delivered_timeline))["events"]
    assert [e["eventCategoryType"] for e in timeline] == [
        "TransactionalSendEvents.EmailSent", "TransactionalSendEvents.EmailBounced"]
    assert timeline[0]["deliveries"] == []  # nobody subscribed to EmailSent
    assert timeline[1]["bounceCode"] == "HARD"
    assert timeline[1]["deliveries"][0]["callbackId"] == cb["id"]
    assert timeline[1]["deliveries"][0]["deliveredAt"] is not None
    _, by_subscriber = await tenant.api.call("GET", "/v1/messages?subscriberKey=ada", expect=200)
    assert len(by_subscriber["events"]) == 2
    status, _ = await tenant.api.call("GET", "/v1/messages")
    assert status == 400

    _, stats = await tenant.api.call("GET", "/v1/stats?windowMinutes=1440", expect=200)
    assert stats["totals"] == {"TransactionalSendEvents.EmailSent": 2, "TransactionalSendEvents.EmailBounced": 1}
    # Webhook POSTs are counted apart from event types: one bounce was subscribed to and delivered.
    assert stats["deliveries"]["totals"]["delivered"] >= 1 and stats["deliveries"]["totals"]["eventsDelivered"] == 1
    assert stats["deliveries"]["totals"]["dead"] == 0
    _, hourly = await tenant.api.call("GET", "/v1/stats?bucket=hour&windowMinutes=1440", expect=200)
    assert sum(sum(b["counts"].values()) for b in hourly["series"]) == 3

    async with aiohttp.ClientSession() as session, session.get(
            relay.base + "/v1/activity/stream?windowMinutes=1440",
            headers={"authorization": f"Bearer {tenant.api.key}"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        first = await response.content.readuntil(b"\n\n")
    assert first.startswith(b"event: counts\ndata: ")
    assert orjson.loads(first.split(b"data: ", 1)[1])["totals"]["TransactionalSendEvents.EmailBounced"] == 1


async def test_operations_routes_isolate_tenants(kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver(responder=lambda r: 500).start()
    harness = await dead_harness(kafka, tmp_path)
    try:
        alice = await harness.tenant()
        bob = await harness.tenant()
        cb = await alice.add_callback(receiver, maxBatchSize=1)
        await alice.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        await send(harness, alice, [sample_event("EmailSent", mid=alice.mid, subscriber_key="a",
                                                 message_key="secret-msg")])

        async def dead() -> Any:
            _, page = await alice.api.call("GET", "/v1/deadletters")
            return page["data"]

        [letter] = await eventually(dead)
        for method, path in [("GET", f"/v1/deadletters/{letter['id']}"),
                             ("POST", f"/v1/deadletters/{letter['id']}/replay"),
                             ("DELETE", f"/v1/deadletters/{letter['id']}"),
                             ("GET", f"/v1/callbacks/{cb['id']}/attempts"),
                             ("GET", f"/v1/callbacks/{cb['id']}/health")]:
            status, _ = await bob.api.call(method, path)
            assert status == 404, (method, path)
        _, page = await bob.api.call("GET", "/v1/deadletters", expect=200)
        assert page["data"] == []
        await bob.api.call("POST", "/v1/deadletters/purge", {}, expect=400)  # no filter: must say "all"
        _, purged = await bob.api.call("POST", "/v1/deadletters/purge", {"all": True}, expect=200)
        assert purged["purged"] == 0
        _, messages = await bob.api.call("GET", "/v1/messages?messageKey=secret-msg", expect=200)
        assert messages["events"] == []
        _, stats = await bob.api.call("GET", "/v1/stats", expect=200)
        assert stats["totals"] == {}
        _, started = await bob.api.call("POST", "/v1/deadletters/replay", {"all": True}, expect=202)
        status, _ = await alice.api.call("GET", f"/v1/deadletters/replay/{started['id']}")
        assert status == 404
        _, still = await alice.api.call("GET", "/v1/deadletters", expect=200)
        assert len(still["data"]) == 1
    finally:
        await harness.close()
        await receiver.stop()


async def test_retention_purges_old_rows_in_the_background(kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver().start()
    harness = await RelayHarness(settings_for(
        kafka.bootstrap, tmp_path, retention_events="1s", retention_attempts="1s",
        retention_deadletters="1s", retention_interval="300ms")).start()
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(receiver, maxBatchSize=5)
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        await send(harness, tenant, [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"r{i}",
                                                  message_key="kept-briefly") for i in range(5)])
        await receiver.wait_events(5)

        async def purged() -> bool:
            _, body = await tenant.api.call("GET", "/v1/messages?messageKey=kept-briefly")
            _, attempts = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}/attempts")
            return not body["events"] and not attempts["data"]

        await eventually(purged, timeout=20)
    finally:
        await harness.close()
        await receiver.stop()


async def test_metrics_and_probes(relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver, maxBatchSize=5)
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
    await send(relay, tenant, [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"m{i}") for i in range(5)])
    await receiver.wait_events(5)

    async def scraped() -> Any:
        async with aiohttp.ClientSession() as session, session.get(relay.base + "/metrics") as response:
            text = await response.text()
        wanted = [f'relay_delivered_events_total{{callback_id="{cb["id"]}"}} 5.0',
                  f'relay_lane_queue_depth{{callback_id="{cb["id"]}"}}', "relay_consumer_lag{",
                  "relay_end_to_end_seconds_count", "relay_records_consumed_total",
                  f'relay_in_flight_requests{{callback_id="{cb["id"]}"}}']
        return text if all(w in text for w in wanted) else None

    await eventually(scraped, timeout=10)
    async with aiohttp.ClientSession() as session:
        async with session.get(relay.base + "/healthz") as response:
            assert response.status == 200
        async with session.get(relay.base + "/readyz") as response:
            assert response.status == 200 and (await response.json())["status"] == "ready"


async def test_quarantined_records_are_shown_to_the_account_they_name(relay: RelayHarness) -> None:
    alice, bob = await relay.tenant(), await relay.tenant()
    unknown_type = {**sample_event("EmailSent", mid=alice.mid), "eventCategoryType": "Nope.Never"}
    control = {**sample_event("EmailSent", mid=alice.mid), "definitionKey": "bad\u0000key"}
    await produce(relay.settings.kafka_bootstrap, relay.topic,
                  [orjson.dumps(unknown_type), orjson.dumps(control), b"{not json"])
    await relay.caught_up()

    async def alices() -> Any:
        _, page = await alice.api.call("GET", "/v1/quarantine", expect=200)
        return page["data"] if len(page["data"]) >= 2 else None

    rows = await eventually(alices, what="alice's two quarantined records")
    assert {r["reason"] for r in rows} == {"unknown_type", "nul_character"}
    by_reason = {r["reason"]: r for r in rows}
    assert "bad\\u0000key" in by_reason["nul_character"]["excerpt"]
    assert by_reason["unknown_type"]["topic"] == relay.topic and by_reason["unknown_type"]["bytes"] > 0
    _, bobs = await bob.api.call("GET", "/v1/quarantine", expect=200)
    assert bobs["data"] == [], "records naming another account's MID, or none, are not shown"


async def test_a_callbacks_circuit_history_is_on_its_page(kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver(responder=lambda r: 503).start()
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path, retry_schedule="0,50ms",
                                              retry_max_age="1h", circuit_failure_threshold=2,
                                              circuit_cooldown="200ms")).start()
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(receiver, maxBatchSize=1)
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        await send(harness, tenant, [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"k{i}")
                                     for i in range(3)])

        async def opened() -> Any:
            _, activity = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}/activity", expect=200)
            return [h for h in activity["healthHistory"] if h["kind"] == "callback.circuit_opened"]

        [first, *_] = await eventually(opened, timeout=30, what="the circuit opening, on the callback's page")
        assert first["detail"]["consecutiveFailures"] >= 2 and first["detail"]["lastStatus"] == 503
        receiver.responder = None

        async def closed() -> Any:
            _, activity = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}/activity", expect=200)
            return activity["healthHistory"][0]["kind"] == "callback.circuit_closed"

        await eventually(closed, timeout=30, what="the circuit closing after the endpoint recovered")
    finally:
        await harness.close()
        await receiver.stop()
