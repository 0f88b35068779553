"""Ingest: the Kafka consumer group, one store transaction per consumed batch, then the commit.

Order of a batch, and why:
1. decode + validate each record; bad ones become quarantine entries (never a stall);
2. route good ones to the callbacks that want them;
3. persist events, jobs and quarantine entries in ONE transaction (the outbox);
4. hand the new jobs to the dispatcher — they are durable now, so delivery need not wait for
   the broker round-trip of the commit;
5. publish quarantine entries to their topic;
6. commit offsets — only now, so a crash anywhere above re-reads the batch, and the
   idempotent persist turns the re-read into no new jobs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from relay.config import Settings
from relay.delivery.dispatcher import Dispatcher
from relay.events import Event, InvalidEvent, RecordRef, decode_event
from relay.metrics import METRICS
from relay.publisher import Publisher
from relay.routing import Router
from relay.store.base import Store
from relay.store.models import NewJob, QuarantinedRecord

log = structlog.get_logger("relay.ingest")

QUARANTINE_RAW_LIMIT = 65536


class Ingest:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        router: Router,
        dispatcher: Dispatcher,
        publisher: Publisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._router = router
        self._dispatcher = dispatcher
        self._publisher = publisher
        self._clock = clock
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Held while a batch is processed, and by a rebalance: a revoked partition's last batch
        # is persisted (and its jobs in the store) before another instance is given it.
        self._batch_lock = asyncio.Lock()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=self._settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(1_048_576, self._settings.max_record_bytes * 2),
            fetch_max_bytes=64 * 1_048_576,
            isolation_level="read_committed",
        )
        self._consumer.subscribe(list(self._settings.topics), listener=_Ownership(self))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="ingest")

    async def stop(self) -> None:
        """Finish the batch in hand (persist + commit), then leave the group."""
        self._stopping = True
        if self._task:
            try:
                await asyncio.wait_for(self._task, timeout=30)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._consumer:
            await self._consumer.stop()

    async def hand_over(self, partitions: list[tuple[str, int]]) -> None:
        """A rebalance takes these partitions: finish the batch in hand (its jobs reach the store),
        then let the dispatcher settle their in-flight sends — all before another instance gets them."""
        async with self._batch_lock:
            await self._dispatcher.revoke(partitions, grace=self._settings.delivery_timeout + 1.0)
        log.info("partitions_revoked", partitions=sorted(f"{t}:{p}" for t, p in partitions))

    async def take_over(self, partitions: list[tuple[str, int]]) -> None:
        await self._dispatcher.assign(partitions)
        log.info("partitions_assigned", partitions=sorted(f"{t}:{p}" for t, p in partitions))

    async def lag(self) -> dict[TopicPartition, int]:
        """Records behind the high watermark, per assigned partition (as of the last fetch)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), timeout=1.0)
            except (TimeoutError, KafkaError):
                continue
            lags[tp] = max(0, highwater - position)
        return lags

    async def _run(self) -> None:
        assert self._consumer is not None
        while not self._stopping:
            try:
                batch = await self._consumer.getmany(
                    timeout_ms=200, max_records=self._settings.fetch_max_records
                )
                if batch:
                    async with self._batch_lock:
                        await self.process(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A store or broker hiccup: nothing was committed, so the batch is read again.
                log.exception("ingest_batch_failed")
                await self._rewind()
                await asyncio.sleep(1.0)

    async def _rewind(self) -> None:
        """Seek back to the last committed offsets so an unpersisted batch is not skipped."""
        consumer = self._consumer
        assert consumer is not None
        for tp in consumer.assignment():
            try:
                committed = await consumer.committed(tp)
            except KafkaError:
                log.warning("rewind_failed", topic=tp.topic, partition=tp.partition)
                continue
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)

    async def process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        index = self._router.index
        now = self._clock()
        events: list[tuple[Event, str, str, int, int]] = []
        jobs: list[NewJob] = []
        quarantined: list[QuarantinedRecord] = []
        unrouted = 0
        for tp, records in batch.items():
            for record in records:
                ref = RecordRef(tp.topic, tp.partition, record.offset)
                try:
                    event = decode_event(record.value, ref, self._settings.max_record_bytes)
                except InvalidEvent as exc:
                    quarantined.append(_quarantine(record, ref, exc, now))
                    continue
                account_id = index.account_for(event.mid)
                if account_id is None:
                    unrouted += 1
                    continue
                events.append((event, account_id, tp.topic, tp.partition, record.offset))
                for route in index.route(event, account_id):
                    jobs.append(NewJob(event.id, route.callback.id, route.ordering_key, tp.partition,
                                       route.held_by, topic=tp.topic))

        started = time.perf_counter()
        new_jobs = await self._store.persist_batch(events, jobs, quarantined)
        persisted = time.perf_counter()
        if new_jobs:
            self._dispatcher.submit(new_jobs)
        if quarantined:
            await self._publisher.publish_many(
                self._settings.quarantine_topic,
                [(_quarantine_record(q), q.key) for q in quarantined],
            )
            for q in quarantined:
                log.warning("record_quarantined", topic=q.topic, partition=q.partition,
                            offset=q.offset, reason=q.reason, detail=q.detail[:200])
        await self._commit(batch)

        count = sum(len(r) for r in batch.values())
        log.debug("batch_persisted", records=count, events=len(events), jobs=len(new_jobs),
                  quarantined=len(quarantined), persist_ms=round((persisted - started) * 1000, 2),
                  commit_ms=round((time.perf_counter() - persisted) * 1000, 2))
        METRICS.records_consumed.inc(count)
        METRICS.records_quarantined.inc(len(quarantined))
        METRICS.events_unrouted.inc(unrouted)
        METRICS.jobs_created.inc(len(new_jobs))
        for event_type, count in Counter(event.type for event, *_ in events).items():
            METRICS.events_by_type.labels(event_type).inc(count)

    async def _commit(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self._consumer is not None
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced while we worked; the new owner re-reads, and the
            # idempotent persist makes that harmless.
            log.warning("commit_failed_after_rebalance", partitions=len(offsets))


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partition ownership follows the consumer group (see ``Ingest.hand_over``)."""

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._ingest.hand_over([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._ingest.take_over([(tp.topic, tp.partition) for tp in assigned])


def _quarantine(record: ConsumerRecord, ref: RecordRef, exc: InvalidEvent,
                now: float) -> QuarantinedRecord:
    raw = record.value
    if exc.reason == "too_large" and raw is not None:
        raw = raw[:QUARANTINE_RAW_LIMIT]
    return QuarantinedRecord(
        topic=ref.topic, partition=ref.partition, offset=ref.offset, reason=exc.reason,
        detail=exc.detail[:2000], raw=raw, key=record.key, at=now,
    )


def _quarantine_record(q: QuarantinedRecord) -> dict[str, Any]:
    return {
        "reason": q.reason,
        "detail": q.detail,
        "topic": q.topic,
        "partition": q.partition,
        "offset": q.offset,
        "at": q.at,
        "key": base64.b64encode(q.key).decode() if q.key is not None else None,
        "value": base64.b64encode(q.raw).decode() if q.raw is not None else None,
    }
