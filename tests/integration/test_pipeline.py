"""Events in through a real broker, signed webhooks out to a real receiver."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest

from relay.events import delivery_validator
from relay.samples import sample_event
from relay.verify import verify
from tests.helpers.harness import RelayHarness, settings_for
from tests.helpers.kafka import KafkaBroker, produce, read_topic
from tests.helpers.polling import eventually
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka


def encode(event: dict) -> bytes:
    return orjson.dumps(event)


async def test_event_arrives_signed_with_expected_body(relay: RelayHarness,
                                                       receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    callback = await tenant.add_callback(receiver)
    await tenant.subscribe(callback["id"], ["TransactionalSendEvents.EmailBounced"])
    await relay.refresh_routing()

    event = sample_event("EmailBounced", mid=tenant.mid, subscriber_key="sub-42")
    await produce(relay.settings.kafka_bootstrap, relay.topic, [encode(event)], [b"sub-42"])

    [delivered] = await receiver.wait_events(1)
    request = receiver.delivered()[0]
    assert verify(callback["secret"], request.headers, request.body)
    assert request.headers["content-type"] == "application/json"
    delivery_validator()(request.json)
    assert delivered["eventId"].startswith("evt_")
    assert {k: v for k, v in delivered.items() if k != "eventId"} == event


async def test_unsubscribed_type_and_other_account_do_not_arrive(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    other = await relay.tenant()
    callback = await tenant.add_callback(receiver)
    await tenant.subscribe(callback["id"], ["TransactionalSendEvents.EmailBounced"])
    await relay.refresh_routing()

    unwanted_type = sample_event("EmailSent", mid=tenant.mid, subscriber_key="unwanted-type")
    other_account = sample_event("EmailBounced", mid=other.mid, subscriber_key="other-account")
    unknown_account = sample_event("EmailBounced", mid="999999999999")
    marker = sample_event("EmailBounced", mid=tenant.mid, subscriber_key="marker")
    await produce(relay.settings.kafka_bootstrap, relay.topic,
                  [encode(e) for e in (unwanted_type, other_account, unknown_account, marker)],
                  [b"k"] * 4)  # one key, one partition: the marker comes last

    await receiver.wait_events(1)  # the marker came last on the partition: the others are persisted
    [unwanted] = await tenant.timeline("unwanted-type")
    [elsewhere] = await other.timeline("other-account")
    assert unwanted["deliveries"] == [] and elsewhere["deliveries"] == [], "no job for either"
    events = receiver.delivered_events()
    assert [e["info"]["subscriberKey"] for e in events] == ["marker"]


async def test_bad_records_are_quarantined_and_the_partition_keeps_flowing(
        kafka: KafkaBroker, tmp_path, receiver: RecordingReceiver) -> None:
    harness = RelayHarness(settings_for(kafka.bootstrap, tmp_path, max_record_bytes=4096))
    await harness.start()
    try:
        tenant = await harness.tenant()
        callback = await tenant.add_callback(receiver)
        await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])
        await harness.refresh_routing()

        good = sample_event("EmailSent", mid=tenant.mid, subscriber_key="after-the-bad-ones")
        wrong_type = {**sample_event("EmailSent", mid=tenant.mid), "timestampUTC": "yesterday"}
        missing = sample_event("EmailSent", mid=tenant.mid)
        del missing["eventCategoryType"]
        huge = sample_event("EmailSent", mid=tenant.mid)
        huge["info"]["reason"] = "x" * 1900
        huge["composite"] = {"blob": "y" * 5000}
        bad = [b"{not json", encode(wrong_type), encode(missing), encode(huge), b"[1, 2]", None]
        await produce(kafka.bootstrap, harness.topic, [*bad, encode(good)], [b"same-key"] * 7)

        [event] = await receiver.wait_events(1)
        assert event["info"]["subscriberKey"] == "after-the-bad-ones"

        records = [orjson.loads(v) for v in
                   await read_topic(kafka.bootstrap, harness.settings.quarantine_topic, 6)]
        reasons = [r["reason"] for r in records]
        assert reasons == ["malformed_json", "schema", "schema", "too_large", "schema", "empty"]
        assert [r["offset"] for r in records] == [0, 1, 2, 3, 4, 5]
        assert all(r["topic"] == harness.topic and r["partition"] is not None for r in records)
        assert base64.b64decode(records[0]["value"]) == b"{not json"
        assert "timestampUTC" in records[1]["detail"]
        assert "eventCategoryType" in records[2]["detail"]

        assert harness.relay is not None
        stored = await harness.relay.store.list_quarantine()
        assert sorted(q.offset for q in stored) == [0, 1, 2, 3, 4, 5]
    finally:
        await harness.close()


async def test_restart_resumes_from_committed_offsets_and_loses_nothing(
        kafka: KafkaBroker, tmp_path, receiver: RecordingReceiver) -> None:
    settings = settings_for(kafka.bootstrap, tmp_path)
    harness = RelayHarness(settings)
    await harness.start()
    try:
        tenant = await harness.tenant()
        callback = await tenant.add_callback(receiver)
        await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])
        await harness.refresh_routing()

        first = [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"a-{i}") for i in range(40)]
        await produce(kafka.bootstrap, harness.topic, [encode(e) for e in first])
        await receiver.wait_events(40)

        await harness.stop()
        second = [sample_event("SmsSent", mid=tenant.mid, subscriber_key=f"b-{i}") for i in range(60)]
        await produce(kafka.bootstrap, harness.topic, [encode(e) for e in second])
        await harness.start()

        await receiver.wait_events(100)
        await harness.caught_up()  # ingest has read and persisted everything produced, instead of a sleep
        keys = [e["info"]["subscriberKey"] for e in receiver.delivered_events()]
        assert sorted(set(keys)) == sorted({f"a-{i}" for i in range(40)} | {f"b-{i}" for i in range(60)})
        # committed offsets were honoured: nothing from before the restart came back
        assert len(keys) == 100
    finally:
        await harness.close()


async def test_a_slow_commit_holds_ingest_back_only_until_the_next_commit_takes_its_batches(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    """Offset commits are held here, in front of the real broker call (a slow broker). Ingest writes
    on until 8 batches wait for a commit; when the held commit returns, the next one takes all 8 and
    ingest goes on while that one is in flight. Waiting for each batch's own commit instead would
    let in one batch per commit: ingest paced to broker round trips."""
    tenant, _ = await relay.subscribed_tenant(receiver, ["TransactionalSendEvents.*"])
    assert relay.relay is not None
    consumer = relay.relay.ingest._consumer
    assert consumer is not None
    real_commit = consumer.commit
    gates: list[asyncio.Event] = []

    async def held_commit(offsets: dict) -> None:
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()
        await real_commit(offsets)

    async def send(n: int) -> None:
        event = sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"slow-commit-{n}")
        await produce(relay.settings.kafka_bootstrap, relay.topic, [encode(event)], [f"k{n}".encode()])

    async def second_commit_started() -> bool:
        return len(gates) >= 2

    consumer.commit = held_commit  # type: ignore[method-assign]
    try:
        for n in range(1, 10):  # one batch each: the next record is produced once the last arrived
            await send(n)
            await receiver.wait_events(n)
        gates[0].set()  # the first commit returns; the next one takes the 8 batches behind it
        await eventually(second_commit_started, what="a second commit")
        await send(10)
        await receiver.wait_events(10)  # while that second commit is still held (its gate is never set here)
    finally:
        consumer.commit = real_commit  # type: ignore[method-assign]
        for gate in gates:
            gate.set()
    await relay.caught_up()
