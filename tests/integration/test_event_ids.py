"""Event ids made from a record's coordinates follow its partition's offsets, and a record stored
with the hashed id of before (migration 13) is recognised when it is read again after the upgrade:
no second event, no second job, no second id for one record."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from relay.crypto import SecretBox, load_master_key
from relay.events import RecordRef, decode_event, event_id_for
from relay.samples import sample_event
from relay.store import open_store
from relay.store.models import IncomingEvent, NewJob
from tests.helpers.harness import RelayHarness, settings_for
from tests.helpers.kafka import KafkaBroker
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka

KEY = b"one-key"  # one key, one partition: the records are read in the order they were sent


async def _send(bootstrap: str, topic: str, values: list[bytes]) -> list[tuple[int, int]]:
    """Send in order; each record's (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [await (await producer.send(topic, value, key=KEY)) for value in values]
    finally:
        await producer.stop()
    return [(meta.partition, meta.offset) for meta in sent]


async def test_a_record_stored_with_a_hashed_id_is_recognised_after_the_upgrade(
        kafka: KafkaBroker, tmp_path: Path, receiver: RecordingReceiver) -> None:
    settings = settings_for(kafka.bootstrap, tmp_path / "data")
    harness = RelayHarness(settings)
    await harness.start()
    try:
        tenant, callback = await harness.subscribed_tenant(receiver, ["TransactionalSendEvents.EmailSent"])
        await harness.stop()  # records go in while no relay reads them
        values = [orjson.dumps(sample_event("EmailSent", mid=tenant.mid, subscriber_key="one-key",
                                            message_key=f"m{i}")) for i in range(6)]
        coordinates = await _send(settings.kafka_bootstrap, harness.topic, values)
        partition = coordinates[0][0]
        refs = [RecordRef(harness.topic, p, offset) for p, offset in coordinates]
        last_hashed = refs[2].offset

        # A relay from before migration 13 stored the first three, with hashed ids and a job each,
        # and died before it committed their offsets; the migration recorded where hashed ids end.
        store = open_store(settings.resolved_store_url, SecretBox(load_master_key(settings.master_key,
                                                                                  settings.data_dir)))
        await store.start()
        try:
            old = [decode_event(value, ref, 1 << 20, hashed_through=last_hashed)
                   for value, ref in zip(values[:3], refs[:3], strict=True)]
            await store.persist_batch(
                [IncomingEvent(event, tenant.account["id"], ref.topic, ref.partition, ref.offset)
                 for event, ref in zip(old, refs[:3], strict=True)],
                [NewJob(event.id, callback["id"], "one-key", partition, topic=harness.topic) for event in old], [])
            await store._write(lambda c: c.execute(
                "INSERT INTO hashed_event_ids (topic, partition, last_offset) VALUES (?, ?, ?)",
                (harness.topic, partition, last_hashed)))
        finally:
            await store.close()

        await harness.start()
        expected = {f"m{i}" for i in range(6)}
        await receiver.wait_for(
            lambda: expected <= {e["info"]["messageKey"] for e in receiver.delivered_events()}, 60)
        # Anything a second job would send comes before a later record with the same key.
        [(_, marker_offset)] = await _send(settings.kafka_bootstrap, harness.topic, [orjson.dumps(
            sample_event("EmailSent", mid=tenant.mid, subscriber_key="one-key", message_key="marker"))])
        await receiver.wait_for(
            lambda: "marker" in {e["info"]["messageKey"] for e in receiver.delivered_events()}, 60)

        ids_by_key: dict[str, set[str]] = {}
        for event in receiver.delivered_events():
            ids_by_key.setdefault(event["info"]["messageKey"], set()).add(event["eventId"])
        records = {**{f"m{i}": ref for i, ref in enumerate(refs)},
                   "marker": RecordRef(harness.topic, partition, marker_offset)}
        assert ids_by_key == {
            key: {event_id_for({}, ref, last_hashed)} for key, ref in records.items()}, \
            "each record arrives under one id: hashed up to the recorded offset, in offset order after it"
        assert event_id_for({}, refs[0], last_hashed) != event_id_for({}, refs[0]), "the two schemes differ"

        assert harness.relay is not None
        rows = await harness.relay.store._read(lambda c: c.execute(
            'SELECT "offset", COUNT(*) FROM events WHERE topic = ? GROUP BY "offset"', (harness.topic,)).fetchall())
        assert sorted((int(offset), int(count)) for offset, count in rows) == [
            (ref.offset, 1) for ref in sorted(records.values(), key=lambda ref: ref.offset)], \
            "one stored event per record, the ones read again included"
    finally:
        await harness.close()
