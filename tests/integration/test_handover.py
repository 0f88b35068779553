"""Partitions changing hands: a batch in hand while a rebalance moves its partitions (two
instances, one PostgreSQL store), and an assignment made while the store is out of reach.

The race this pins down: instance A has fetched a batch and is planning it when instance B joins
the group. A's partitions are revoked, and until the group hands them out again A's consumer still
names its old ones. Had A written its batch in that gap, the jobs for a partition B is then given
could reach the store after B loaded that partition's jobs, while A's dispatcher no longer delivers
them; B, reading the records again, finds their events stored and makes no jobs. Those events were
never delivered (the bench's two-instance run left up to 2,000 undelivered that way in 2 runs of
18, a reproduction script in 1 run of 6). Here gates hold A's first batch and its rebalance so
that A plans the batch inside that gap every time, and every store write of either instance is
checked against what its dispatcher owns.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from relay.app import Relay
from relay.config import load_settings
from relay.crypto import SecretBox, load_master_key
from relay.events import RecordRef, decode_event
from relay.ingest import Ingest, RecordWrite
from relay.samples import sample_event
from relay.store import open_store
from relay.store.base import StoreUnavailable
from relay.store.models import IncomingEvent, NewJob
from relay.store.sql import SqlStore
from tests.helpers.harness import RelayHarness, settings_for, settings_values
from tests.helpers.kafka import KafkaBroker, free_port, produce
from tests.helpers.polling import eventually
from tests.helpers.postgres import fresh_store_url
from tests.helpers.receiver import RecordingReceiver
from tests.integration.test_crashes import assert_per_key_order, events_for, webhook_ids_by_event

pytestmark = pytest.mark.kafka


class Gate:
    """A point a task reaches and then waits at until the test opens it."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def pass_through(self) -> None:
        self.reached.set()
        await self.opened.wait()

    async def wait_reached(self) -> None:
        async def reached() -> bool:
            return self.reached.is_set()

        await eventually(reached, timeout=60, what=self.what)

    def open(self) -> None:
        self.opened.set()


def check_writes(relay: Relay, name: str, violations: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Record every store write of events whose partition the instance's dispatcher does not own."""
    store = relay.store
    persist = store.persist_batch

    async def checked(events: list[IncomingEvent], *args: Any, **kwargs: Any) -> Any:
        owned = relay.dispatcher.owned
        written = {(e.topic, e.partition) for e in events}
        if not written <= owned:
            violations.append(f"{name} wrote events of {sorted(written - owned)} while owning {sorted(owned)}")
        return await persist(events, *args, **kwargs)

    monkeypatch.setattr(store, "persist_batch", checked)


async def test_a_batch_planned_across_a_rebalance_is_left_to_the_partitions_new_owner(
        kafka: KafkaBroker, postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = settings_values(kafka.bootstrap, tmp_path / "a", store_url=fresh_store_url(postgres),
                             master_key=base64.b64encode(os.urandom(32)).decode(), batch_linger="2ms")
    a = RelayHarness(load_settings(env={}, overrides=shared))
    b = RelayHarness(load_settings(env={}, overrides={**shared, "data_dir": str(tmp_path / "b"),
                                                      "api_listen": f"127.0.0.1:{free_port()}"}))
    held = Gate("instance A fetched its first batch")
    planned = Gate("instance A planned its first batch")
    revoked = Gate("instance A's partitions revoked as B joined")
    violations: list[str] = []
    receiver = await RecordingReceiver().start()
    try:
        await a.start()
        tenant, _ = await a.subscribed_tenant(receiver, ["TransactionalSendEvents.*"], maxBatchSize=10)
        await a.stop()  # the backlog is produced while no one reads: A's first batch holds most of it
        events = events_for(tenant.mid, 240, keys=48)
        await produce(kafka.bootstrap, a.topic, [orjson.dumps(e) for e in events],
                      [e["info"]["subscriberKey"].encode() for e in events])

        original_plan, original_hand_over = Ingest._plan, Ingest.hand_over

        def is_a(ingest: Ingest) -> bool:
            return a.relay is not None and ingest is a.relay.ingest

        async def gated_plan(ingest: Ingest, batch: dict[TopicPartition, list[ConsumerRecord]]) -> list[RecordWrite]:
            first = is_a(ingest) and not held.reached.is_set()
            if first:
                await held.pass_through()
            writes = await original_plan(ingest, batch)
            if first:
                planned.reached.set()
            return writes

        async def gated_hand_over(ingest: Ingest, partitions: list[tuple[str, int]]) -> None:
            await original_hand_over(ingest, partitions)
            if is_a(ingest) and partitions and not revoked.reached.is_set():
                await revoked.pass_through()  # A rejoins the group only once this opens

        monkeypatch.setattr(Ingest, "_plan", gated_plan)
        monkeypatch.setattr(Ingest, "hand_over", gated_hand_over)
        await a.start()
        assert a.relay is not None
        check_writes(a.relay, "A", violations, monkeypatch)
        await held.wait_reached()

        await b.start()  # B joins the group: A's partitions are revoked, to be shared out again
        assert b.relay is not None
        check_writes(b.relay, "B", violations, monkeypatch)  # before B can be given anything: A has not rejoined
        await revoked.wait_reached()
        held.open()  # A plans its batch inside the gap: revoked, not yet given anything
        await planned.wait_reached()
        for _ in range(20):  # loop turns, not time: A's ingest and its writer task run to their next wait
            await asyncio.sleep(0)
        assert not violations, violations
        revoked.open()

        async def both_assigned() -> bool:
            return bool(a.relay and a.relay.ingest.owned) and bool(b.relay and b.relay.ingest.owned)

        await eventually(both_assigned, timeout=60, what="A and B each given partitions")
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= len(events), timeout=60)
        assert not violations, violations
        ids = webhook_ids_by_event(receiver)
        assert len(ids) == len(events)
        assert all(len(hooks) == 1 for hooks in ids.values()), "a re-send came with a new webhook-id"
        assert_per_key_order(receiver)
    finally:
        for gate in (held, revoked):
            gate.open()
        await b.close()
        await a.close()
        await receiver.stop()


async def test_an_assignment_made_while_the_store_is_out_of_reach_loads_its_jobs_later(
        kafka: KafkaBroker, tmp_path: Path, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher's load of a new assignment fails (the store out of reach for that read): the
    jobs already pending for those partitions are loaded by the dispatcher's watch, with no new
    event to wake their lane, and ingest goes on all the same."""
    settings = settings_for(kafka.bootstrap, tmp_path / "data")
    harness = RelayHarness(settings)
    await harness.start()
    try:
        tenant, callback = await harness.subscribed_tenant(receiver, ["TransactionalSendEvents.EmailSent"])
        await harness.stop()
        # Jobs a previous owner left pending, for records past what the topic holds: only the
        # dispatcher's load can find them, ingest never reads them.
        refs = [RecordRef(harness.topic, partition, 10_000 + partition) for partition in range(6)]
        events = [decode_event(orjson.dumps(sample_event(
            "EmailSent", mid=tenant.mid, subscriber_key=f"k{ref.partition}", message_key=f"left-{ref.partition}")),
            ref, 1 << 20) for ref in refs]
        store = open_store(settings.resolved_store_url, SecretBox(load_master_key(settings.master_key,
                                                                                  settings.data_dir)))
        await store.start()
        try:
            await store.persist_batch(
                [IncomingEvent(event, tenant.account["id"], ref.topic, ref.partition, ref.offset)
                 for event, ref in zip(events, refs, strict=True)],
                [NewJob(event.id, callback["id"], event.subscriber_key, ref.partition, topic=ref.topic)
                 for event, ref in zip(events, refs, strict=True)], [])
        finally:
            await store.close()

        original = SqlStore.callbacks_with_pending
        failed: list[str] = []

        async def out_of_reach_once(store: SqlStore, partitions: Any = None) -> list[str]:
            if not failed:
                failed.append("callbacks_with_pending")
                raise StoreUnavailable("the store is out of reach (test)")
            return await original(store, partitions)

        monkeypatch.setattr(SqlStore, "callbacks_with_pending", out_of_reach_once)
        await harness.start()

        def arrived() -> set[str]:
            return {event["info"]["messageKey"] for event in receiver.delivered_events()}

        left = {f"left-{ref.partition}" for ref in refs}
        await receiver.wait_for(lambda: left <= arrived(), timeout=60)
        assert failed, "the first load after the assignment failed"
        await produce(kafka.bootstrap, harness.topic, [orjson.dumps(sample_event(
            "EmailSent", mid=tenant.mid, subscriber_key="k-new", message_key="after"))])
        await receiver.wait_for(lambda: "after" in arrived(), timeout=60)
    finally:
        await harness.close()
