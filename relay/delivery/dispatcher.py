"""The dispatcher: a lane per callback under one global cap, and grouped writes of results.

Results are written in groups (one transaction per flush) rather than one commit per attempt:
the jobs are already durable, so a result lost in a crash only means a re-send with the same
``webhook-id`` — which the delivery contract allows.

Ownership: an instance delivers only jobs whose source Kafka partition its consumer owns. On a
rebalance, ``revoke`` stops new sends, waits (bounded) for those in flight and writes their
results, so the next owner finds every job in its final or pending state; ``assign`` loads the
pending and retrying jobs of the new partitions from the store.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import structlog

from relay.delivery.endpoint import EndpointSender
from relay.delivery.lane import Lane, LaneConfig
from relay.delivery.outcomes import LaneEvent, LaneEventSink
from relay.delivery.retry import RetryPolicy
from relay.store.base import Store
from relay.store.models import Callback, DeliveryResult, Job
from relay.supervisor import Routine, Supervisor
from relay.telemetry import Telemetry

log = structlog.get_logger("relay.dispatcher")

ResultListener = Callable[[DeliveryResult, Callback], None]


class Dispatcher:
    def __init__(
        self,
        store: Store,
        sender: EndpointSender,
        callbacks: Callable[[str], Callback | None],
        policy: RetryPolicy,
        lane_config: LaneConfig,
        supervisor: Supervisor,
        telemetry: Telemetry | None = None,
        global_max_in_flight: int = 256,
        flush_interval: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sender = sender
        self._callbacks = callbacks
        self._policy = policy
        self._lane_config = lane_config
        self._slots = asyncio.Semaphore(global_max_in_flight)
        self._flush_interval = flush_interval
        self._clock = clock
        self._lanes: dict[str, Lane] = {}
        self._pending_results: list[DeliveryResult] = []
        self._supervisor = supervisor
        self._telemetry = telemetry or Telemetry()
        self._routines: list[Routine] = []
        self._listeners: list[ResultListener] = []
        self._lane_listeners: list[LaneEventSink] = []
        self._owned: set[tuple[str, int]] = set()
        self._partition_count = 0  # of the input topics, all instances together
        self._requeue_version: int | None = None
        self._reload_due = False  # an assignment's load failed (store out of reach): the watch retries it

    def add_listener(self, listener: ResultListener) -> None:
        """Called for every result (metrics, dead-letter topic, callback disabling)."""
        self._listeners.append(listener)

    def add_lane_listener(self, listener: LaneEventSink) -> None:
        """Called on circuit changes, failing-since changes and disable requests."""
        self._lane_listeners.append(listener)

    async def start(self) -> None:
        """Lanes appear when partitions are assigned (``assign``), not before."""
        self._routines = [
            self._supervisor.every("result-writer", self._flush_interval, self._flush),
            self._supervisor.every("requeue-watch", 0.5, self._watch_requeues),
        ]

    async def stop(self, grace: float = 5.0) -> None:
        """Lanes first (in-flight POSTs get ``grace``), then the last results are written."""
        await asyncio.gather(*(lane.stop(grace) for lane in self._lanes.values()))
        for routine in self._routines:
            await routine.stop()
        await self._flush()

    async def assign(self, partitions: Iterable[tuple[str, int]], partition_count: int = 0) -> None:
        """These partitions are ours now: load their pending and retrying jobs from the store.
        ``partition_count`` (all input partitions) sets this instance's share of rate limits."""
        self._owned |= set(partitions)
        self._partition_count = partition_count or self._partition_count
        try:
            await self._reload_owned()
        except Exception:
            self._reload_due = True
            raise

    async def _reload_owned(self) -> None:
        """Every lane reads the store again, and callbacks with pending work get a lane."""
        for callback_id in await self._store.callbacks_with_pending(sorted(self._owned)):
            self._lane(callback_id)
        for lane in self._lanes.values():
            lane.requeue()

    async def revoke(self, partitions: Iterable[tuple[str, int]], grace: float) -> None:
        """These partitions go to another instance: no new sends for them, in-flight sends
        finish (at most ``grace`` seconds), and their results are written before we return."""
        self._owned -= set(partitions)
        sends: set[asyncio.Task[None]] = set()
        for lane in self._lanes.values():
            sends |= lane.forget()
        if sends:
            _, late = await asyncio.wait(sends, timeout=grace)
            if late:
                log.warning("revoke_with_sends_in_flight", sends=len(late), grace_s=grace)
        for lane in self._lanes.values():
            lane.forget()  # jobs that came back for a retry
        await self._flush()
        if self._owned:
            for lane in self._lanes.values():
                lane.requeue()

    def submit(self, jobs: list[Job]) -> None:
        """Hand freshly persisted jobs to their lanes (only those of partitions we own).

        Ingest writes jobs only for partitions this dispatcher owns (see ``Ingest._still_owned``);
        one that is not owned here is in the store where its owner may not look, so it is logged."""
        by_callback: dict[str, list[Job]] = defaultdict(list)
        unowned: set[tuple[str, int]] = set()
        for job in jobs:
            if job.source in self._owned:
                by_callback[job.callback_id].append(job)
            else:
                unowned.add(job.source)
        if unowned:
            log.warning("jobs_for_unowned_partitions", partitions=sorted(f"{t}:{p}" for t, p in unowned),
                        owned=len(self._owned))
        for callback_id, lane_jobs in by_callback.items():
            self._lane(callback_id).offer(lane_jobs)

    def requeue(self, callback_id: str) -> None:
        """Jobs of this callback were set back to pending in the store (replay)."""
        self._lane(callback_id).requeue()

    async def _watch_requeues(self) -> None:
        """Another instance put jobs back to pending (replay, resumed subscription): reload."""
        version = await self._store.requeue_version()
        changed = self._requeue_version is not None and version != self._requeue_version
        if (changed or self._reload_due) and self._owned:
            await self._reload_owned()
        self._reload_due = False
        self._requeue_version = version

    @property
    def owned(self) -> frozenset[tuple[str, int]]:
        """The (topic, partition) pairs whose jobs this instance delivers now."""
        return frozenset(self._owned)

    def share(self) -> float:
        """The part of each callback's rate limit this instance enforces: the part of the input
        partitions it owns (their traffic is what it delivers)."""
        if not self._partition_count:
            return 1.0
        return min(1.0, len(self._owned) / self._partition_count)

    @property
    def lanes(self) -> dict[str, Lane]:
        return self._lanes

    def _lane(self, callback_id: str) -> Lane:
        lane = self._lanes.get(callback_id)
        if lane is None:
            lane = Lane(
                callback_id, callback=self._callbacks, store=self._store, sender=self._sender,
                policy=self._policy, config=self._lane_config, global_slots=self._slots,
                report=self._on_result, notify=self._on_lane_event, owned=lambda: self._owned, share=self.share,
                telemetry=self._telemetry, clock=self._clock,
            )
            self._lanes[callback_id] = lane
            lane.start(self._supervisor)
        return lane

    def _on_result(self, result: DeliveryResult, callback: Callback) -> None:
        self._pending_results.append(result)
        for listener in self._listeners:
            try:
                listener(result, callback)
            except Exception:
                log.exception("result_listener_failed", callback_id=callback.id)

    def _on_lane_event(self, event: LaneEvent, callback: Callback) -> None:
        for listener in self._lane_listeners:
            try:
                listener(event, callback)
            except Exception:
                log.exception("lane_listener_failed", callback_id=callback.id, event=type(event).__name__)

    async def _flush(self) -> None:
        if not self._pending_results:
            return
        results, self._pending_results = self._pending_results, []
        try:
            await self._store.record_results(results)
        except Exception:
            self._pending_results[:0] = results
            raise
