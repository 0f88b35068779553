"""The delivery engine on a real broker and real receivers: ordering, batching, retries,
isolation, dead letters, circuit breaking."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
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
from tests.helpers.receiver import Received, RecordingReceiver

pytestmark = pytest.mark.kafka


async def start_harness(kafka: KafkaBroker, tmp_path: Path, **overrides: Any) -> RelayHarness:
    return await RelayHarness(settings_for(kafka.bootstrap, tmp_path, **overrides)).start()


def sequenced(mid: str, keys: int, per_key: int, kind: str = "EmailSent") -> list[dict[str, Any]]:
    """Events interleaved across keys; messageKey carries the per-key sequence number."""
    events = []
    for seq in range(per_key):
        for k in range(keys):
            events.append(sample_event(kind, mid=mid, subscriber_key=f"key-{k}",
                                       message_key=f"{seq:06d}"))
    return events


async def produce_keyed(harness: RelayHarness, events: list[dict[str, Any]]) -> None:
    await produce(harness.settings.kafka_bootstrap, harness.topic,
                  [orjson.dumps(e) for e in events],
                  [e["info"]["subscriberKey"].encode() for e in events])


def first_seen_order(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per key, the sequence numbers in the order they first arrived (duplicates dropped)."""
    seen: set[str] = set()
    order: dict[str, list[str]] = defaultdict(list)
    for event in events:
        if event["eventId"] in seen:
            continue
        seen.add(event["eventId"])
        order[event["info"]["subscriberKey"]].append(event["info"]["messageKey"])
    return order


async def setup(harness: RelayHarness, receiver: RecordingReceiver, **callback: Any) -> Tenant:
    tenant = await harness.tenant()
    cb = await tenant.add_callback(receiver, **callback)
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
    await harness.refresh_routing()
    tenant.account["callback"] = cb
    return tenant


async def test_batches_respect_max_batch_size_and_per_key_order(
        kafka: KafkaBroker, tmp_path: Path, receiver: RecordingReceiver) -> None:
    harness = await start_harness(kafka, tmp_path, batch_linger="20ms")
    try:
        tenant = await setup(harness, receiver, maxBatchSize=7)
        events = sequenced(tenant.mid, keys=5, per_key=40)
        await produce_keyed(harness, events)
        await receiver.wait_events(200)
        sizes = [len(r.json) for r in receiver.delivered()]
        assert max(sizes) <= 7
        assert max(sizes) > 1, "linger should have produced real batches"
        assert all(r.verified for r in receiver.requests)
        for key, seqs in first_seen_order(receiver.delivered_events()).items():
            assert seqs == sorted(seqs), key
            assert len(seqs) == 40
    finally:
        await harness.close()


async def test_random_failures_keep_per_key_order_and_everything_arrives(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    rng = random.Random(7)

    async def flaky(received: Received) -> web.StreamResponse | int:
        roll = rng.random()
        if roll < 0.25:
            return 500
        if roll < 0.32:
            await asyncio.sleep(0.6)  # longer than the delivery timeout
            return 504
        if roll < 0.38:
            received.drop_connection()
            return 599
        return 200

    receiver = await RecordingReceiver(responder=flaky).start()
    harness = await start_harness(kafka, tmp_path, delivery_timeout="300ms",
                                  retry_schedule="0,20ms,50ms", retry_max_age="120s",
                                  circuit_failure_threshold=1000)
    try:
        tenant = await setup(harness, receiver, maxBatchSize=5)
        events = sequenced(tenant.mid, keys=8, per_key=25)
        await produce_keyed(harness, events)
        await receiver.wait_for(
            lambda: len({e["eventId"] for e in receiver.delivered_events()}) >= 200, 60)
        assert sum(1 for r in receiver.requests if r.status != 200) > 10, "failures were injected"
        for key, seqs in first_seen_order(receiver.delivered_events()).items():
            assert seqs == sorted(seqs), key
            assert len(seqs) == 25
        # Each batch's first answer, good or not, ended its pin (the jobs hold their batch id since).
        store = harness.relay.store if harness.relay else None
        assert store is not None

        async def no_pin_left() -> bool:
            left = await store._read(lambda c: c.execute("SELECT COUNT(*) FROM batch_pins").fetchone()[0])
            return int(left) == 0

        await eventually(no_pin_left, timeout=30, what="every batch pin deleted by its batch's first answer")
    finally:
        await harness.close()
        await receiver.stop()


async def test_a_hanging_endpoint_does_not_hold_back_healthy_ones(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    async def hang(received: Received) -> int:
        await asyncio.sleep(30)
        return 200

    hanging = await RecordingReceiver(responder=hang).start()
    healthy = [await RecordingReceiver().start() for _ in range(3)]
    harness = await start_harness(kafka, tmp_path, delivery_timeout="20s",
                                  lane_max_in_flight=4, global_max_in_flight=8)
    try:
        tenant = await harness.tenant()
        for receiver in [hanging, *healthy]:
            cb = await tenant.add_callback(receiver, maxBatchSize=1)
            await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        await harness.refresh_routing()
        await produce_keyed(harness, sequenced(tenant.mid, keys=50, per_key=6))
        for receiver in healthy:
            await receiver.wait_events(300, timeout=20)
        assert len(hanging.requests) == 0  # still hanging: 4 in flight, none finished
        assert harness.relay is not None
        assert harness.relay.dispatcher.lanes[next(
            cid for cid, lane in harness.relay.dispatcher.lanes.items() if lane.depth)].depth >= 290
    finally:
        await harness.close()
        for receiver in [hanging, *healthy]:
            await receiver.stop()


async def test_retry_after_is_honoured(kafka: KafkaBroker, tmp_path: Path) -> None:
    def slow_down_once(received: Received) -> web.StreamResponse | int:
        if not receiver.requests:
            return web.Response(status=429, headers={"Retry-After": "2"})
        return 200

    receiver = await RecordingReceiver(responder=slow_down_once).start()
    harness = await start_harness(kafka, tmp_path, retry_schedule="0,50ms")
    try:
        tenant = await setup(harness, receiver, maxBatchSize=1)
        await produce_keyed(harness, sequenced(tenant.mid, keys=1, per_key=1))
        await receiver.wait_events(1, timeout=15)
        first, second = receiver.requests[0], receiver.requests[1]
        assert first.status == 429
        assert second.at - first.at >= 1.9
        assert second.headers["webhook-id"] == first.headers["webhook-id"]
    finally:
        await harness.close()
        await receiver.stop()


async def test_410_dead_letters_and_disables_the_callback(kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver(responder=lambda r: 410).start()
    harness = await start_harness(kafka, tmp_path)
    try:
        tenant = await setup(harness, receiver, maxBatchSize=1)
        cb = tenant.account["callback"]
        await produce_keyed(harness, sequenced(tenant.mid, keys=1, per_key=1))
        await receiver.wait_for(lambda: len(receiver.requests) >= 1)

        async def disabled() -> dict[str, Any] | None:
            _, body = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}")
            return None if body["enabled"] else body

        body = await eventually(disabled, timeout=15, what="the callback disabled after a 410")
        assert "410" in body["disabledReason"]
        ops = [orjson.loads(v) for v in await read_topic(kafka.bootstrap, harness.settings.ops_topic, 1)]
        assert ops[0]["type"] == "callback.disabled" and ops[0]["callbackId"] == cb["id"]
        dead = [orjson.loads(v) for v in
                await read_topic(kafka.bootstrap, harness.settings.deadletter_topic, 1)]
        assert dead[0]["reason"].startswith("gone") and dead[0]["lastStatus"] == 410

        await harness.routing_caught_up()
        later = sequenced(tenant.mid, keys=1, per_key=3)
        for event in later:
            event["info"]["subscriberKey"] = "after-410"
        await produce_keyed(harness, later)
        await harness.settled(b"after-410")
        assert all(e["deliveries"] == [] for e in await tenant.timeline("after-410")), "no job for a disabled callback"
        assert len(receiver.requests) == 1
    finally:
        await harness.close()
        await receiver.stop()


async def test_exhausted_schedule_gives_a_dead_letter_with_every_attempt(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver(
        responder=lambda r: web.Response(status=500, text="database is down")).start()
    harness = await start_harness(kafka, tmp_path, retry_schedule="0,100ms,200ms",
                                  retry_max_age="1s", circuit_failure_threshold=100)
    try:
        tenant = await setup(harness, receiver, maxBatchSize=1)
        await produce_keyed(harness, sequenced(tenant.mid, keys=1, per_key=1))
        dead = [orjson.loads(v) for v in
                await read_topic(kafka.bootstrap, harness.settings.deadletter_topic, 1, timeout=15)]
        assert dead[0]["reason"] == "retry schedule exhausted"
        assert dead[0]["event"]["eventId"] == dead[0]["eventId"]

        async def recorded() -> dict[str, Any] | None:  # results are written in groups every 50 ms
            _, page = await tenant.api.call("GET", "/v1/deadletters", expect=200)
            if not page["data"]:
                return None
            _, letter = await tenant.api.call("GET", f"/v1/deadletters/{page['data'][0]['id']}", expect=200)
            return letter if len(letter["attempts"]) == letter["attemptCount"] >= 4 else None

        letter = await eventually(recorded, timeout=15, what="the dead letter with every attempt recorded")
        attempts = letter["attempts"]
        assert len(attempts) == letter["attemptCount"] == len(receiver.requests) >= 4
        assert all(a["status"] == 500 and a["responseExcerpt"] == "database is down" for a in attempts)
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    finally:
        await harness.close()
        await receiver.stop()


async def test_circuit_opens_and_waiting_jobs_spend_no_attempts(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver(responder=lambda r: 503).start()
    harness = await start_harness(kafka, tmp_path, retry_schedule="0,10ms", retry_max_age="60s",
                                  circuit_failure_threshold=3, circuit_cooldown="1500ms")
    try:
        tenant = await setup(harness, receiver, maxBatchSize=1)
        await produce_keyed(harness, sequenced(tenant.mid, keys=20, per_key=1))
        opened = [orjson.loads(v) for v in await read_topic(kafka.bootstrap, harness.settings.ops_topic, 1)]
        assert opened[0]["type"] == "callback.circuit_opened"
        opened_at = opened[0]["at"]

        # Only lower bounds on time (a busy machine makes gaps longer, never shorter): nothing is
        # sent before the cooldown, then one probe; it fails, the cooldown doubles, then one more.
        def probes() -> list[float]:
            return [r.at for r in receiver.requests if r.at >= opened_at + 1.5]

        await receiver.wait_for(lambda: len(probes()) >= 2, timeout=20)
        burst = [r for r in receiver.requests if r.at < opened_at + 1.5]
        assert len(burst) <= 3 + 7, "only what was already in flight when the circuit opened"
        first, second = probes()[:2]
        assert second - first >= 3.0, "one probe at a time, the next after the doubled cooldown"
        receiver.responder = None  # the endpoint recovers
        await receiver.wait_events(20, timeout=15)
    finally:
        await harness.close()
        await receiver.stop()


async def test_backlog_beyond_the_window_waits_in_the_store_and_drains_in_order(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver(responder=lambda r: 503).start()
    harness = await start_harness(kafka, tmp_path, lane_window=40, retry_schedule="0,300ms",
                                  retry_max_age="60s", circuit_failure_threshold=1000)
    try:
        tenant = await setup(harness, receiver, maxBatchSize=3)
        await produce_keyed(harness, sequenced(tenant.mid, keys=4, per_key=100))
        assert harness.relay is not None
        relay = harness.relay

        async def all_persisted() -> bool:
            return await relay.store.count_jobs() == 400

        await eventually(all_persisted, timeout=15, what="400 jobs persisted")
        [lane] = relay.dispatcher.lanes.values()
        assert lane.depth <= 40
        receiver.responder = None
        await receiver.wait_for(lambda: len({e["eventId"] for e in receiver.delivered_events()}) >= 400, 30)
        for key, seqs in first_seen_order(receiver.delivered_events()).items():
            assert seqs == sorted(seqs) and len(seqs) == 100, key
    finally:
        await harness.close()
        await receiver.stop()


async def test_the_concurrency_limit_halves_on_overload_and_grows_back(kafka: KafkaBroker, tmp_path: Path) -> None:
    """relay_concurrency_limit per callback: 503s cut it to 1; good answers raise it again."""
    overloaded = True

    async def respond(received: Received) -> int:
        return 503 if overloaded else 200

    receiver = await RecordingReceiver(responder=respond).start()
    harness = await start_harness(kafka, tmp_path, retry_schedule="0,50ms,100ms", retry_max_age="300s",
                                  circuit_failure_threshold=1000)
    try:
        tenant = await setup(harness, receiver, maxBatchSize=1)
        callback_id = tenant.account["callback"]["id"]

        async def limit(wanted: Any) -> float | None:
            async with aiohttp.ClientSession() as session, session.get(harness.base + "/metrics") as response:
                text = await response.text()
            for line in text.splitlines():
                if line.startswith(f'relay_concurrency_limit{{callback_id="{callback_id}"}}'):
                    value = float(line.split()[-1])
                    return value if wanted(value) else None
            return None

        await produce_keyed(harness, sequenced(tenant.mid, keys=20, per_key=5))
        await receiver.wait_for(lambda: len(receiver.requests) >= 20, 30)
        assert await eventually(lambda: limit(lambda v: v == 1), timeout=15, what="the limit cut to 1") == 1
        overloaded = False
        await receiver.wait_for(lambda: len({e["eventId"] for e in receiver.delivered_events()}) >= 100, 60)
        assert await eventually(lambda: limit(lambda v: v > 1), timeout=15, what="the limit raised again") > 1
    finally:
        await harness.close()
        await receiver.stop()
