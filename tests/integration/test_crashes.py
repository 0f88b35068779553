"""Nothing lost: kill -9, SIGTERM and a broker restart in the middle of a stream."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.samples import sample_event
from tests.helpers.harness import ADMIN_KEY, ApiClient, RelayHarness, create_tenant, settings_for, settings_values
from tests.helpers.kafka import KafkaBroker, produce
from tests.helpers.polling import eventually
from tests.helpers.process import RelayProcess
from tests.helpers.receiver import Received, RecordingReceiver

pytestmark = pytest.mark.kafka


def events_for(mid: str, count: int, keys: int = 20) -> list[dict[str, Any]]:
    return [sample_event("EmailSent", mid=mid, subscriber_key=f"key-{i % keys}", message_key=f"{i:06d}")
            for i in range(count)]


async def stream(bootstrap: str, topic: str, events: list[dict[str, Any]], chunk: int, pause: float) -> None:
    for start in range(0, len(events), chunk):
        part = events[start:start + chunk]
        await produce(bootstrap, topic, [orjson.dumps(e) for e in part],
                      [e["info"]["subscriberKey"].encode() for e in part])
        await asyncio.sleep(pause)


async def register(base: str, receiver: RecordingReceiver, max_batch: int) -> tuple[str, str, str]:
    """An account with a verified, subscribed callback; returns (mid, account key, callback id).
    Routing reloads at once on the instance that made the change."""
    admin = ApiClient(base, ADMIN_KEY)
    tenant = await create_tenant(admin)
    callback = await tenant.add_callback(receiver, maxBatchSize=max_batch)
    await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])
    await admin.close()
    await tenant.api.close()
    return tenant.mid, tenant.api.key, callback["id"]


def webhook_ids_by_event(receiver: RecordingReceiver) -> dict[str, set[str]]:
    ids: dict[str, set[str]] = defaultdict(set)
    for request in receiver.delivered():
        for event in request.json:
            ids[event["eventId"]].add(request.headers["webhook-id"])
    return ids


def assert_per_key_order(receiver: RecordingReceiver) -> None:
    seen: set[str] = set()
    order: dict[str, list[str]] = defaultdict(list)
    for event in receiver.delivered_events():
        if event["eventId"] not in seen:
            seen.add(event["eventId"])
            order[event["info"]["subscriberKey"]].append(event["info"]["messageKey"])
    for key, seqs in order.items():
        assert seqs == sorted(seqs), key


@pytest.mark.parametrize("max_batch", [1, 10])
async def test_kill_9_mid_stream_loses_nothing(kafka: KafkaBroker, tmp_path: Path, max_batch: int) -> None:
    values = settings_values(kafka.bootstrap, tmp_path / "data", batch_linger="2ms")
    relay = RelayProcess(values, tmp_path / "relay.log")
    receiver = await RecordingReceiver().start()
    try:
        await relay.start()
        mid, _, _ = await register(relay.base, receiver, max_batch)
        events = events_for(mid, 1500)
        producer = asyncio.create_task(stream(kafka.bootstrap, values["topics"][0], events, 50, 0.05))
        rng = random.Random(max_batch)
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.4, 1.0))
            relay.kill()
            await relay.start()
        await producer
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= 1500, timeout=90)

        ids = webhook_ids_by_event(receiver)
        assert len(ids) == 1500
        assert all(len(hooks) == 1 for hooks in ids.values()), "a duplicate came with a new webhook-id"
        assert_per_key_order(receiver)
    finally:
        relay.ensure_stopped()
        await receiver.stop()


async def test_a_batch_in_flight_at_kill_9_comes_again_as_it_was(kafka: KafkaBroker, tmp_path: Path) -> None:
    """The batch a POST carried when its instance died is sent again with the same events under the
    same webhook-id, though more events of its partition wait by then: unpinned, its jobs would
    linger for them and go out in a batch of six under another id."""
    values = settings_values(kafka.bootstrap, tmp_path / "data", batch_linger="300ms")
    relay = RelayProcess(values, tmp_path / "relay.log")
    held: list[Received] = []
    killed = asyncio.Event()

    async def hold_the_first(received: Received) -> int:
        if held:
            return 200
        held.append(received)
        await killed.wait()
        return 503  # to no one: the relay is gone

    receiver = await RecordingReceiver(responder=hold_the_first).start()
    try:
        await relay.start()
        mid, _, _ = await register(relay.base, receiver, 10)
        events = [sample_event("EmailSent", mid=mid, subscriber_key="one-key", message_key=f"{i:06d}")
                  for i in range(6)]
        await stream(kafka.bootstrap, values["topics"][0], events[:3], 3, 0.0)
        await receiver.wait_for(lambda: bool(held), timeout=60)
        relay.kill()
        killed.set()
        await stream(kafka.bootstrap, values["topics"][0], events[3:], 3, 0.0)
        await relay.start()
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= 6, timeout=60)

        first = held[0]
        assert [e["info"]["messageKey"] for e in first.json] == ["000000", "000001", "000002"]
        again = [r for r in receiver.delivered() if r.headers["webhook-id"] == first.headers["webhook-id"]]
        assert again, f"no POST came again under {first.headers['webhook-id']}: " \
                      f"{[(r.headers['webhook-id'], len(r.json)) for r in receiver.delivered()]}"
        assert all(r.body == first.body for r in again), "the batch came again with other events"
        assert_per_key_order(receiver)
    finally:
        relay.ensure_stopped()
        await receiver.stop()


async def test_a_bulk_replay_resumes_after_kill_9(kafka: KafkaBroker, tmp_path: Path) -> None:
    """The replay lives in the store: after the instance running it dies, the next one picks it up
    once the lease lapses and finishes it."""
    values = settings_values(kafka.bootstrap, tmp_path / "data", retry_schedule="0,50ms", retry_max_age="500ms",
                             circuit_failure_threshold=1000, operation_lease="2s")
    relay = RelayProcess(values, tmp_path / "relay.log")
    receiver = await RecordingReceiver(responder=lambda r: 500).start()
    try:
        await relay.start()
        mid, key, _ = await register(relay.base, receiver, 1)
        api = ApiClient(relay.base, key)
        await produce(kafka.bootstrap, values["topics"][0],
                      [orjson.dumps(e) for e in events_for(mid, 20, keys=20)])

        async def dead() -> Any:
            _, page = await api.call("GET", "/v1/deadletters?limit=100")
            return len(page["data"]) == 20

        await eventually(dead, timeout=60, what="20 dead letters")
        receiver.responder = None
        _, started = await api.call("POST", "/v1/deadletters/replay", {"all": True, "ratePerSecond": 2}, expect=202)

        async def under_way() -> Any:
            _, op = await api.call("GET", f"/v1/operations/{started['id']}")
            return op["progress"]["done"] >= 2

        await eventually(under_way, what="the replay making progress")
        relay.kill()
        await relay.start()

        async def finished() -> Any:
            _, op = await api.call("GET", f"/v1/deadletters/replay/{started['id']}")
            return op if op["done"] else None

        op = await eventually(finished, timeout=60, what="the replay finishing after the restart")
        assert op["state"] == "done" and op["error"] is None
        await receiver.wait_for(lambda: len({e["eventId"] for e in receiver.delivered_events()}) == 20, timeout=30)
        _, left = await api.call("GET", "/v1/deadletters")
        assert left["data"] == []
        await api.close()
    finally:
        relay.ensure_stopped()
        await receiver.stop()


async def test_a_recovery_resumes_after_kill_9_from_where_it_stopped(kafka: KafkaBroker, tmp_path: Path) -> None:
    """Its cursor is in the store: the next instance continues after the last batch it recorded, in order."""
    values = settings_values(kafka.bootstrap, tmp_path / "data", operation_lease="2s")
    relay = RelayProcess(values, tmp_path / "relay.log")
    receiver = await RecordingReceiver().start()
    try:
        await relay.start()
        mid, key, callback_id = await register(relay.base, receiver, 1)
        api = ApiClient(relay.base, key)
        events = events_for(mid, 12, keys=3)
        await produce(kafka.bootstrap, values["topics"][0], [orjson.dumps(e) for e in events],
                      [e["info"]["subscriberKey"].encode() for e in events])
        await receiver.wait_events(12, timeout=30)
        _, started = await api.call("POST", f"/v1/callbacks/{callback_id}/recover",
                                    {"since": 0, "until": 1e10, "ratePerSecond": 2}, expect=202)

        async def under_way() -> Any:
            _, op = await api.call("GET", f"/v1/operations/{started['id']}")
            return op["progress"]["done"] >= 2

        await eventually(under_way, what="the recovery making progress")
        relay.kill()
        await relay.start()

        async def finished() -> Any:
            _, op = await api.call("GET", f"/v1/operations/{started['id']}")
            return op if op["state"] == "done" else None

        op = await eventually(finished, timeout=60, what="the recovery finishing after the restart")
        recovered = [e for r in receiver.delivered() if r.headers.get("webhook-recovered") for e in r.json]
        assert {e["eventId"] for e in recovered} == {e["eventId"] for e in receiver.delivered_events()}
        assert len(recovered) <= 12 + 2, "a restart re-sent more than the batch it had in hand"
        assert op["progress"]["done"] >= 12
        by_key: dict[str, list[str]] = defaultdict(list)
        for event in recovered:
            by_key[event["info"]["subscriberKey"]].append(event["info"]["messageKey"])
        for key_name, keys in by_key.items():
            assert list(dict.fromkeys(keys)) == sorted(dict.fromkeys(keys)), key_name
        await api.close()
    finally:
        relay.ensure_stopped()
        await receiver.stop()


async def test_sigterm_finishes_in_flight_work_and_exits_cleanly(kafka: KafkaBroker, tmp_path: Path) -> None:
    values = settings_values(kafka.bootstrap, tmp_path / "data")
    relay = RelayProcess(values, tmp_path / "relay.log")
    receiver = await RecordingReceiver().start()
    try:
        await relay.start()
        mid, key, callback_id = await register(relay.base, receiver, 1)
        events = events_for(mid, 600)
        producer = asyncio.create_task(stream(kafka.bootstrap, values["topics"][0], events, 30, 0.05))
        await asyncio.sleep(1.0)
        assert await relay.terminate() == 0
        await producer
        await relay.start()
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= 600, timeout=60)
        # A graceful stop re-sends nothing by itself: an event arrives twice only if an attempt of
        # its batch was recorded as failed (a receiver too slow for the timeout on a busy machine).
        counts = defaultdict(int)
        for event in receiver.delivered_events():
            counts[event["eventId"]] += 1
        twice = {e for e, n in counts.items() if n > 1}
        resent = {request.headers["webhook-id"] for request in receiver.delivered()
                  if any(event["eventId"] in twice for event in request.json)}
        api = ApiClient(relay.base, key)
        try:
            _, failed = await api.call("GET", f"/v1/callbacks/{callback_id}/attempts?outcome=retry&limit=1000",
                                       expect=200)
        finally:
            await api.close()
        unexplained = resent - {a["webhookId"] for a in failed["data"]}
        assert not unexplained, f"re-sent after a graceful stop without a failed attempt: {sorted(unexplained)}"
    finally:
        relay.ensure_stopped()
        await receiver.stop()


async def test_broker_restart_mid_stream_recovers_by_itself(kafka: KafkaBroker, tmp_path: Path) -> None:
    if not kafka.managed:
        pytest.skip("the broker named by RELAY_KAFKA_BOOTSTRAP cannot be restarted by the tests")
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path)).start()
    receiver = await RecordingReceiver().start()
    try:
        tenant = await harness.tenant()
        callback = await tenant.add_callback(receiver, maxBatchSize=5)
        await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])
        await harness.refresh_routing()
        events = events_for(tenant.mid, 400)
        await stream(kafka.bootstrap, harness.topic, events[:200], 50, 0.0)
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= 50, timeout=30)
        await asyncio.get_running_loop().run_in_executor(None, kafka.restart)
        await stream(kafka.bootstrap, harness.topic, events[200:], 50, 0.0)
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= 400, timeout=90)
        assert_per_key_order(receiver)
    finally:
        await harness.close()
        await receiver.stop()
