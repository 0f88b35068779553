"""Ingest: the Kafka consumer group, one store transaction per consumed batch, then the commit.

Order of a batch, and why:
1. decode + validate each record; bad ones become quarantine entries (never a stall);
2. route good ones to the callbacks that want them;
3. persist events, jobs and quarantine entries in ONE transaction (the outbox). If the store
   refuses the data, the batch is split until the records responsible are found; they are
   quarantined with the store's message and the rest is persisted. If the store is out of
   reach, the same write is retried with capped backoff — never rewound, never written twice;
4. hand the new jobs to the dispatcher — they are durable now, so delivery need not wait for
   the broker round-trip of the commit;
5. wake the quarantine outbox, which publishes new quarantine rows to their topic on its own;
6. commit offsets — only now, so a crash anywhere above re-reads the batch, and the
   idempotent persist turns the re-read into no new jobs and no new quarantine rows.

Steps 1-2 of batch N+1 run while steps 3-6 of batch N do (the SQLite writer is a thread, the
commit a broker round-trip), and records that arrive meanwhile are taken in one larger batch.
Batches still persist and commit one at a time, in fetch order.

A watch beside the loop makes a stall loud: /readyz, ``relay_ingest_stalled`` and ``relay.ops``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from relay import tracing
from relay.config import Settings
from relay.delivery.dispatcher import Dispatcher
from relay.events import InvalidEvent, RecordRef, accepted_event_types, decode_event
from relay.metrics import METRICS
from relay.publisher import Publisher
from relay.quarantine import STORED_TOO_LARGE_BYTES, QuarantineOutbox, claimed_mid, quarantine_entry, storable_text
from relay.routing import Router
from relay.stall import StallWatch
from relay.store.base import RecordRejected, Store, StoreUnavailable
from relay.store.models import IncomingEvent, Job, NewJob, QuarantinedRecord
from relay.supervisor import Routine, Supervisor
from relay.telemetry import Telemetry

log = structlog.get_logger("relay.ingest")

_RETRY_FIRST, _RETRY_MAX = 0.2, 5.0

Batch = dict[TopicPartition, list[ConsumerRecord]]
_ROUTED: dict[str, object] = {}  # an event's parsed dict once routed: never read again
_PLAN_SLICE = 256  # records planned between two yields to the loop (~5 ms)
_MAX_UNCOMMITTED = 8  # persisted batches whose offsets no commit has taken yet


class IngestStopped(Exception):
    """Stop was asked while a batch waited for the store: it is left uncommitted, to be read again."""


@dataclass(slots=True)
class RecordWrite:
    """What one Kafka record writes: an event and its jobs, or a quarantine entry (or nothing,
    for an event of an unknown account). The unit ingest splits a refused batch into."""

    record: ConsumerRecord
    ref: RecordRef
    event: IncomingEvent | None = None
    jobs: list[NewJob] = field(default_factory=list)
    quarantine: QuarantinedRecord | None = None


class Ingest:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        router: Router,
        dispatcher: Dispatcher,
        publisher: Publisher,
        supervisor: Supervisor,
        clock: Callable[[], float] = time.time,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._router = router
        self._dispatcher = dispatcher
        self._publisher = publisher
        self._clock = clock
        self._accepted = accepted_event_types(settings.extra_event_types)
        self._consumer: AIOKafkaConsumer | None = None
        self._supervisor = supervisor
        self._telemetry = telemetry or Telemetry()
        self._task: asyncio.Task[None] | None = None
        self._watch: Routine | None = None
        self._stopping = False
        # Held while a batch is processed, and by a rebalance: a revoked partition's last batch
        # is persisted (and its jobs in the store) before another instance is given it.
        self._batch_lock = asyncio.Lock()
        self.outbox = QuarantineOutbox(store, publisher, settings.quarantine_topic, clock, supervisor)
        self.stall = StallWatch(settings.ingest_stall_seconds, clock)
        self._writing: asyncio.Task[None] | None = None
        self._persisted: asyncio.Future[None] | None = None  # done once ``_writing``'s batch is in the store
        self._uncommitted: dict[TopicPartition, int] = {}  # offsets persisted, not yet committed
        self._uncommitted_batches = 0  # how many batches ``_uncommitted`` covers
        self._commit_taken: asyncio.Future[None] | None = None  # done when a commit takes ``_uncommitted``
        self._last_error: str | None = None
        self._hashed_ids: dict[tuple[str, int], int] = {}  # see ``Store.hashed_event_ids``
        # Clear from a revoke until the assignment that follows it: ``consumer.assignment()`` still
        # names the old partitions in that gap, so what ingest may write is what the dispatcher owns
        # once this is set (see ``_still_owned``).
        self._assigned = asyncio.Event()

    async def start(self) -> None:
        self._hashed_ids = await self._store.hashed_event_ids()
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
        self.outbox.start()
        self.outbox.wake()  # rows a previous run could not publish
        self._task = self._supervisor.spawn("ingest", self._run())
        self._watch = self._supervisor.every("ingest-watch", 1.0, self._observe)

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
        if self._watch:
            await self._watch.stop()
        await self.outbox.stop()
        if self._consumer:
            await self._consumer.stop()

    async def hand_over(self, partitions: list[tuple[str, int]]) -> None:
        """A rebalance takes these partitions: finish the batch in hand (its jobs reach the store),
        then let the dispatcher settle their in-flight sends — all before another instance gets them."""
        async with self._batch_lock:
            self._assigned.clear()
            await self._settle_writer(forget=False)
            await self._dispatcher.revoke(partitions, grace=self._settings.delivery_timeout + 1.0)
        log.info("partitions_revoked", partitions=sorted(f"{t}:{p}" for t, p in partitions))

    async def take_over(self, partitions: list[tuple[str, int]]) -> None:
        """The dispatcher loads these partitions' jobs from the store; only then may ingest write
        theirs (see ``_hand_to_writer``). If the store is out of reach, the dispatcher owns them
        all the same and loads them again by itself, and ingest goes on (it retries its writes)."""
        try:
            await self._dispatcher.assign(partitions, self._partition_count())
        except Exception as exc:
            log.warning("partition_jobs_load_failed", error=f"{type(exc).__name__}: {exc}",
                        partitions=sorted(f"{t}:{p}" for t, p in partitions))
        self._assigned.set()
        log.info("partitions_assigned", partitions=sorted(f"{t}:{p}" for t, p in partitions))

    @property
    def owned(self) -> frozenset[TopicPartition]:
        """The input partitions this instance reads and delivers now (none during a rebalance)."""
        if not self._assigned.is_set():
            return frozenset()
        return frozenset(TopicPartition(topic, partition) for topic, partition in self._dispatcher.owned)

    def _partition_count(self) -> int:
        """Partitions of the input topics across the whole group (0 when the metadata is not known)."""
        if self._consumer is None:
            return 0
        return sum(len(self._consumer.partitions_for_topic(topic) or ()) for topic in self._settings.topics)

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

    async def check_ready(self) -> None:
        """Readiness: raise while ingest is stalled, saying since when and why."""
        if self.stall.stalled:
            raise RuntimeError(self._stall_reason())

    # -- the loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        """Fetch and plan batch N+1 while batch N persists and commits (a two-stage pipeline).

        Batches persist and commit strictly in fetch order: a batch is handed to the writer once
        the previous one is in the store (its offsets may still be committing: each batch commits
        after the one before), and is dropped (to be read again) when that one failed."""
        assert self._consumer is not None
        try:
            while not self._stopping:
                try:
                    batch = await self._consumer.getmany(
                        timeout_ms=200, max_records=self._settings.fetch_max_records
                    )
                    if batch:
                        await self._hand_to_writer(batch, await self._plan(batch))
                except asyncio.CancelledError:
                    raise
                except IngestStopped:
                    return
                except Exception as exc:
                    # A broker hiccup (fetch or commit): the batch is read again, and the
                    # idempotent persist makes that harmless.
                    METRICS.ingest_errors.labels("broker" if isinstance(exc, KafkaError) else "unexpected").inc()
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("ingest_batch_failed")
                    await self._settle_writer()
                    await self._rewind()
                    await asyncio.sleep(1.0)
            await self._writer_done()
        except IngestStopped:
            return
        finally:
            await self._settle_writer()

    async def _hand_to_writer(self, batch: Batch, writes: list[RecordWrite]) -> None:
        """Start writing this batch once the one before is in the store. Waiting for its offset
        commit too would put a broker round trip (8 ms here) into every batch's cycle. While a
        rebalance is under way, wait for its outcome: what this instance owns then decides."""
        while True:
            await self._until_assigned()
            async with self._batch_lock:
                await self._previous_persisted()  # the previous batch's failure surfaces here: this one is dropped
                while self._uncommitted_batches >= _MAX_UNCOMMITTED and self._writing is not None:
                    await self._commit_progress()  # a slow broker holds back ingest, not memory
                if not self._assigned.is_set():
                    continue  # revoked meanwhile
                batch, writes = self._still_owned(batch, writes)
                if batch:
                    persisted = asyncio.get_running_loop().create_future()
                    self._writing = asyncio.create_task(self.process(batch, writes, persisted, self._writing),
                                                        name="ingest-write")
                    self._persisted = persisted
                return

    async def _previous_persisted(self) -> None:
        """Wait until the batch being written is in the store, or done; raise what it raised."""
        await self._writer_or(self._persisted)

    async def _commit_progress(self) -> None:
        """Wait until a commit takes the offsets waiting for one, or the batch in hand ends (its
        failure surfaces). Not until the oldest waiting batch is done: its commit covers the later
        ones too, and waiting for it would let in one batch per commit, pacing ingest to commits."""
        self._commit_taken = asyncio.get_running_loop().create_future()
        await self._writer_or(self._commit_taken)

    async def _writer_or(self, happened: asyncio.Future[None] | None) -> None:
        """Wait until ``happened`` is done or the batch being written ends; raise what it raised."""
        task = self._writing
        if task is None or happened is None:
            return
        await asyncio.wait({task, happened}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            await self._writer_done()

    async def _writer_done(self) -> None:
        """Wait for the batch being written; raise what it raised. It stays in hand (the stall
        watch sees it) until it is done: a store outage while the next batch waits is a stall."""
        task = self._writing
        if task is None:
            return
        try:
            await task
        finally:
            if self._writing is task:
                self._writing = self._persisted = None

    async def _settle_writer(self, *, forget: bool = True) -> None:
        """Wait for the batch being written without raising. The loop forgets it (it rewinds
        anyway); a rebalance keeps it, so that the loop still sees a failure and rewinds."""
        task = self._writing
        if task is not None:
            await asyncio.wait({task})
            if forget:
                self._writing = self._persisted = None
                if not task.cancelled() and task.exception() is not None:
                    log.warning("ingest_write_failed", error=repr(task.exception()))

    async def _until_assigned(self) -> None:
        """Wait for the assignment that follows a revoke (or for stop: the batch is read again)."""
        while not self._assigned.is_set():
            if self._stopping:
                raise IngestStopped
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._assigned.wait(), timeout=0.5)

    def _still_owned(self, batch: Batch, writes: list[RecordWrite]) -> tuple[Batch, list[RecordWrite]]:
        """Drop what a rebalance took while the batch was planned: its new owner reads it again
        from the last commit. Jobs written for a partition after its revoke would be lost to view:
        its new owner may have loaded that partition's jobs before they reached the store, and a
        second read of the records finds their events stored and makes no jobs.

        Partitions given back to this instance are kept: its dispatcher owns them again, and the
        consumer reads them again from the last commit (the idempotent persist makes that harmless)."""
        owned = self._dispatcher.owned  # (topic, partition) pairs; a TopicPartition is such a tuple
        if all(tp in owned for tp in batch):
            return batch, writes
        kept = {tp: records for tp, records in batch.items() if tp in owned}
        return kept, [w for w in writes if (w.ref.topic, w.ref.partition) in owned]

    async def _rewind(self) -> None:
        """Seek back to the last committed offsets so an uncommitted batch is not skipped. Until
        that succeeds for every partition still assigned, nothing more is fetched: skipping the
        rewind would let a later commit step over the failed batch."""
        consumer = self._consumer
        assert consumer is not None
        delay = _RETRY_FIRST
        while not self._stopping:
            try:
                for tp in consumer.assignment():
                    committed = await consumer.committed(tp)
                    if tp not in consumer.assignment():
                        continue  # revoked meanwhile: its next owner reads from the committed offset
                    if committed is None:
                        await consumer.seek_to_beginning(tp)
                    else:
                        consumer.seek(tp, committed)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("rewind_failed", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    async def process(self, batch: Batch, writes: list[RecordWrite], persisted: asyncio.Future[None],
                      previous: asyncio.Task[None] | None) -> None:
        """Persist a planned batch and hand its jobs to the dispatcher (``persisted`` says so), then,
        once the ``previous`` batch is done, commit every offset persisted so far. A failure of the
        previous batch is this one's too (both are read again)."""
        started = time.perf_counter()
        try:
            new_jobs = await self._persist(writes)
        except BaseException:
            if previous is not None:  # this task ends after the one before: nothing is left running unowned
                await asyncio.wait({previous})
            raise
        for tp, records in batch.items():
            if records:
                self._uncommitted[tp] = records[-1].offset + 1
        self._uncommitted_batches += 1
        persisted.set_result(None)
        stored = time.perf_counter()
        quarantined = [w.quarantine for w in writes if w.quarantine is not None]
        # Counted once persisted: a later batch's commit may cover these offsets before this task
        # gets back from waiting for it, and a record read again is counted again.
        events = [w.event.event for w in writes if w.event is not None]
        METRICS.records_consumed.inc(len(writes))
        METRICS.records_quarantined.inc(len(quarantined))
        METRICS.events_unrouted.inc(sum(1 for w in writes if w.event is None and w.quarantine is None))
        METRICS.jobs_created.inc(new_jobs)
        for event_type, n in Counter(event.type for event in events).items():
            METRICS.events_by_type.labels(event_type).inc(n)
        if quarantined:
            self.outbox.wake()
            for q in quarantined:
                log.warning("record_quarantined", topic=q.topic, partition=q.partition,
                            offset=q.offset, reason=q.reason, detail=q.detail[:200])
        if previous is not None:
            await previous
        # Everything persisted so far, later batches' offsets included: under load one commit covers
        # several batches, so commits never queue up behind one another.
        offsets, self._uncommitted, self._uncommitted_batches = self._uncommitted, {}, 0
        if self._commit_taken is not None and not self._commit_taken.done():
            self._commit_taken.set_result(None)
        if offsets:
            await self._commit(offsets)

        log.debug("batch_persisted", records=len(writes), jobs=new_jobs, quarantined=len(quarantined),
                  persist_ms=round((stored - started) * 1000, 2),
                  commit_ms=round((time.perf_counter() - stored) * 1000, 2))

    async def _plan(self, batch: Batch) -> list[RecordWrite]:
        """Decode and route every record: what each one will write. Yields to the event loop every
        ``_PLAN_SLICE`` records, so the API and the lanes are not held up for a whole batch (one
        routing snapshot serves the batch all the same)."""
        index = self._router.index
        now = self._clock()
        max_bytes = self._settings.max_record_bytes
        writes: list[RecordWrite] = []
        for tp, records in batch.items():
            hashed_through = self._hashed_ids.get((tp.topic, tp.partition), -1)
            for record in records:
                if len(writes) % _PLAN_SLICE == _PLAN_SLICE - 1:
                    await asyncio.sleep(0)
                ref = RecordRef(tp.topic, tp.partition, record.offset)
                write = RecordWrite(record, ref)
                writes.append(write)
                try:
                    event = decode_event(record.value, ref, max_bytes, self._accepted, hashed_through)
                except InvalidEvent as exc:
                    raw = record.value
                    if exc.reason == "too_large" and raw is not None:
                        raw = raw[:STORED_TOO_LARGE_BYTES]
                    mid = claimed_mid(record.value) if exc.reason != "too_large" else None
                    write.quarantine = quarantine_entry(ref.topic, ref.partition, ref.offset, exc.reason,
                                                        exc.detail, raw, record.key, now,
                                                        index.account_for(mid) if mid is not None else None)
                    continue
                account_id = index.account_for(event.mid)
                if account_id is None:
                    continue
                trace = self._telemetry.ingested(tracing.from_headers(record.headers), event.id, account_id,
                                                 event.type, tp.topic, tp.partition, record.offset)
                write.jobs = [NewJob(event.id, route.callback.id, route.ordering_key, tp.partition,
                                     route.held_by, topic=tp.topic)
                              for route in index.route(event, account_id)]
                # The parsed dict is routing's alone, and most of what a record holds while it
                # waits to be stored (at 8,000 records per fetch, 19 MB of peak RSS).
                write.event = IncomingEvent(msgspec.structs.replace(event, data=_ROUTED), account_id, tp.topic,
                                            tp.partition, record.offset, trace)
        return writes

    async def _persist(self, writes: list[RecordWrite]) -> int:
        """Persist the batch; split it while the store refuses its data. Returns new jobs."""
        created = 0
        pending = [writes]
        while pending:
            part = pending.pop()
            try:
                new_jobs = await self._persist_part(part)
            except RecordRejected as exc:
                METRICS.ingest_errors.labels("store_rejected").inc()
                if len(part) > 1:
                    middle = len(part) // 2
                    pending += [part[middle:], part[:middle]]  # the first half is written first
                    continue
                replacement = self._refused(part[0], str(exc))
                if replacement is not None:
                    pending.append([replacement])
                continue
            created += len(new_jobs)
            if new_jobs:
                self._dispatcher.submit(new_jobs)
        return created

    async def _persist_part(self, part: list[RecordWrite]) -> list[Job]:
        """One transaction; retried while the store is out of reach (nothing of it was written)."""
        delay = _RETRY_FIRST
        while True:
            try:
                return await self._store.persist_batch(
                    [w.event for w in part if w.event is not None],
                    [job for w in part for job in w.jobs],
                    [w.quarantine for w in part if w.quarantine is not None],
                )
            except RecordRejected:
                raise
            except Exception as exc:
                kind = "store_unavailable" if isinstance(exc, StoreUnavailable) else "unexpected"
                METRICS.ingest_errors.labels(kind).inc()
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning("ingest_store_retry", kind=kind, error=self._last_error, retry_in=delay,
                            records=len(part), exc_info=kind == "unexpected")
                if self._stopping:
                    raise IngestStopped from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    def _refused(self, write: RecordWrite, message: str) -> RecordWrite | None:
        """The store refused this one record: quarantine it with the store's message instead.
        A quarantine entry the store refuses is kept without its bytes; if even that is refused,
        the record is dropped with an error log rather than stalling its partition."""
        now = self._clock()
        q = write.quarantine
        if q is None:
            entry = quarantine_entry(write.ref.topic, write.ref.partition, write.ref.offset, "store_rejected",
                                     message, write.record.value, write.record.key, now)
        elif q.raw is not None or q.key is not None:
            entry = replace(q, raw=None, key=None, detail=storable_text(f"{q.detail} (bytes not stored: {message})"))
        else:
            log.error("record_unstorable", topic=write.ref.topic, partition=write.ref.partition,
                      offset=write.ref.offset, error=message)
            return None
        log.warning("record_refused_by_store", topic=write.ref.topic, partition=write.ref.partition,
                    offset=write.ref.offset, error=message[:500])
        return RecordWrite(write.record, write.ref, quarantine=entry)

    async def _commit(self, persisted: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        owned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in persisted.items() if tp in owned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced while we worked; the new owner re-reads, and the
            # idempotent persist makes that harmless.
            log.warning("commit_failed_after_rebalance", partitions=len(offsets))
            return
        self.stall.committed()
        METRICS.ingest_last_commit.set(self._clock())

    # -- the stall watch ------------------------------------------------------------------
    async def _observe(self) -> None:
        behind = (self._writing is not None and not self._writing.done()) or any((await self.lag()).values())
        transition = self.stall.observe(behind)
        METRICS.ingest_stalled.set(1 if self.stall.stalled else 0)
        if transition is not None:
            await self._announce(transition)

    def _stall_reason(self) -> str:
        since = self.stall.stalled_since or self.stall.last_commit_at
        reason = f"ingest has not committed for {self._clock() - since:.0f}s with records to read"
        return f"{reason}; last error: {self._last_error}" if self._last_error else reason

    async def _announce(self, transition: str) -> None:
        """One log line and one relay.ops event per stall and per recovery."""
        now = self._clock()
        if transition == "stalled":
            record = {"type": "ingest.stalled", "at": now, "since": self.stall.stalled_since,
                      "reason": self._stall_reason()}
            log.error("ingest_stalled", since=self.stall.stalled_since, reason=record["reason"])
        else:
            record = {"type": "ingest.resumed", "at": now, "lastError": self._last_error}
            log.warning("ingest_resumed", last_error=self._last_error)
            self._last_error = None
        try:
            await asyncio.wait_for(self._publisher.publish(self._settings.ops_topic, record, key=b"ingest"),
                                   timeout=5.0)
        except Exception as exc:
            log.warning("ops_event_failed", kind=record["type"], error=f"{type(exc).__name__}: {exc}")


class _Ownership(ConsumerRebalanceListener):
    """Partition ownership follows the consumer group (see ``Ingest.hand_over``)."""

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._ingest.hand_over([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._ingest.take_over([(tp.topic, tp.partition) for tp in assigned])
