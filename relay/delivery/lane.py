"""One lane per callback: per-key FIFO, batching, bounded in-flight requests, bounded memory.

A lane holds a window of pending jobs in job-id order (which is Kafka order per partition).
A job may be sent only when no earlier job with the same ordering key is unfinished, so a
failing key holds back its own later events and nothing else. A batch's composition is pinned
in the store before its first POST and a failed batch is retried whole, so its ``webhook-id``
stays the same across retries and across a crash. A batch holds jobs of one source partition
only, so it moves whole when the partition moves to another instance.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import structlog

from relay.delivery.circuit import CircuitBreaker, CircuitConfig
from relay.delivery.http import DeliveryClient, HttpOutcome
from relay.delivery.outcomes import CircuitClosed, CircuitOpened, DisableRequested, FailingSince, LaneEventSink
from relay.delivery.retry import RetryPolicy
from relay.signing import SigningKeys, delivery_headers
from relay.store.base import Store
from relay.store.models import AttemptRecord, Callback, DeliveryResult, Job

log = structlog.get_logger("relay.delivery")



@dataclass(frozen=True)
class LaneConfig:
    max_in_flight: int = 8
    window: int = 5000
    linger: float = 0.005
    timeout: float = 10.0
    circuit: CircuitConfig = field(default_factory=CircuitConfig)


def webhook_id(callback_id: str, event_ids: list[str]) -> str:
    """Derived from what is sent, so the same events to the same callback keep the same id."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(callback_id.encode())
    for event_id in event_ids:
        digest.update(b"\x00" + event_id.encode())
    return "msg_" + base64.b32encode(digest.digest()).decode().rstrip("=").lower()


class Lane:
    def __init__(
        self,
        callback_id: str,
        *,
        callback: Callable[[str], Callback | None],
        store: Store,
        client: DeliveryClient,
        policy: RetryPolicy,
        config: LaneConfig,
        global_slots: asyncio.Semaphore,
        report: Callable[[DeliveryResult, Callback], None],
        notify: LaneEventSink,
        owned: Callable[[], Collection[tuple[str, int]] | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.callback_id = callback_id
        self._owned = owned
        self._callback = callback
        self._store = store
        self._client = client
        self._default_policy = policy
        self._config = config
        self._slots = global_slots
        self._report = report
        self._notify = notify
        self._clock = clock
        self._window: dict[int, Job] = {}
        self._in_flight_jobs: set[int] = set()
        self._in_flight_keys: set[str] = set()
        self._in_flight = 0
        self._loaded_upto = 0
        self._backlog = True
        self._skipped_offer = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        current = callback(callback_id)
        self.circuit = CircuitBreaker(config.circuit, current.failing_since if current else None)

    # -- feeding --------------------------------------------------------------------------
    def offer(self, jobs: list[Job]) -> None:
        """New jobs from ingest (already durable). Beyond the window they stay in the store."""
        for job in jobs:
            if self._backlog or len(self._window) >= self._config.window:
                self._backlog = True
                self._skipped_offer = True
                break
            if job.id > self._loaded_upto:
                self._window[job.id] = job
                self._loaded_upto = job.id
        self._wake.set()

    def requeue(self) -> None:
        """Jobs were put back to pending in the store (dead-letter replay): reload from the start."""
        self._loaded_upto = 0
        self._backlog = True
        self._wake.set()

    async def _load(self) -> None:
        room = self._config.window - len(self._window)
        if not self._backlog or room < self._config.window // 2:
            return
        highest_held = max(self._window, default=0)
        self._skipped_offer = False
        owned = self._owned()
        if owned is not None and not owned:
            return
        jobs = await self._store.load_pending(self.callback_id, self._loaded_upto, room,
                                              None if owned is None else sorted(owned))
        for job in jobs:
            if job.id not in self._window and job.id not in self._in_flight_jobs:
                self._window[job.id] = job
            self._loaded_upto = max(self._loaded_upto, job.id)
        # A short read means the store is drained — unless jobs were offered (and skipped) while
        # the read ran: they may be newer than its snapshot, so the lane must read again.
        if len(jobs) < room and not self._skipped_offer:
            self._backlog = False
        if jobs and jobs[0].id < highest_held:  # a replay brought back older jobs
            self._window = dict(sorted(self._window.items()))

    def forget(self) -> set[asyncio.Task[None]]:
        """Partition ownership is changing: drop every job not in flight (the store has them all;
        the next owner loads them from there) and return the sends still in flight."""
        self._window = {i: j for i, j in self._window.items() if i in self._in_flight_jobs}
        self._loaded_upto = 0
        self._backlog = True
        return set(self._sends)

    @property
    def depth(self) -> int:
        return len(self._window)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lane-{self.callback_id}")

    async def stop(self, grace: float) -> None:
        """Stop taking new batches; give in-flight POSTs ``grace`` seconds to finish."""
        self._stopping = True
        self._wake.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sends:
            _, pending = await asyncio.wait(self._sends, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            wait: float | None = 1.0
            try:
                await self._load()
                callback = self._callback(self.callback_id)
                if callback is not None and callback.enabled and callback.verified:
                    wait = await self._dispatch(callback)
            except Exception:
                log.exception("lane_failed", callback_id=self.callback_id)
                wait = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _dispatch(self, callback: Callback) -> float | None:
        """Start as many batches as capacity allows; return how long to wait at most."""
        limit = callback.options.max_in_flight or self._config.max_in_flight
        lingered = False
        while self._in_flight < limit:
            now = self._clock()
            if not self.circuit.allows(now):
                reopens = self.circuit.reopens_at()
                return None if reopens is None else max(0.01, reopens - now)
            batch, next_due = self._next_batch(callback.max_batch_size, now)
            if not batch:
                self.circuit.release_probe()
                return None if next_due is None else max(0.0, next_due - now)
            fresh = batch[0].batch_id is None
            if (fresh and not lingered and len(batch) < callback.max_batch_size
                    and self._config.linger > 0 and callback.max_batch_size > 1):
                self.circuit.release_probe()
                lingered = True
                await asyncio.sleep(self._config.linger)
                continue
            lingered = False
            self._begin(batch)
            try:
                if fresh and len(batch) > 1:
                    batch_id = webhook_id(callback.id, [job.event_id for job in batch])
                    await self._store.assign_batch(batch_id, [job.id for job in batch])
                    for job in batch:
                        job.batch_id = batch_id
                await self._slots.acquire()
            except BaseException:
                self._end(batch)
                raise
            task = asyncio.create_task(self._send(callback, batch))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        return None

    def _next_batch(self, max_size: int, now: float) -> tuple[list[Job], float | None]:
        blocked = set(self._in_flight_keys)
        batch: list[Job] = []
        next_due: float | None = None
        owned = self._owned()
        for job in self._window.values():
            if job.id in self._in_flight_jobs:
                continue
            if owned is not None and job.source not in owned:
                continue  # its partition moved to another instance while a send was in flight
            key = job.ordering_key
            if key is not None and key in blocked:
                continue
            if job.next_attempt_at > now:
                next_due = job.next_attempt_at if next_due is None else min(next_due, job.next_attempt_at)
                if key is not None:
                    blocked.add(key)
                continue
            if job.batch_id is not None:
                if batch:
                    if key is not None:
                        blocked.add(key)
                    continue
                return [j for j in self._window.values()
                        if j.batch_id == job.batch_id and j.id not in self._in_flight_jobs], None
            if batch and job.source != batch[0].source:
                # A batch never spans partitions: its webhook-id must survive a hand-over whole.
                if key is not None:
                    blocked.add(key)
                continue
            batch.append(job)
            if len(batch) >= max_size:
                break
        return batch, next_due

    def _begin(self, batch: list[Job]) -> None:
        self._in_flight += 1
        for job in batch:
            self._in_flight_jobs.add(job.id)
            if job.ordering_key is not None:
                self._in_flight_keys.add(job.ordering_key)

    def _end(self, batch: list[Job]) -> None:
        self._in_flight -= 1
        for job in batch:
            self._in_flight_jobs.discard(job.id)
            if job.ordering_key is not None:
                self._in_flight_keys.discard(job.ordering_key)
        self._wake.set()

    # -- sending --------------------------------------------------------------------------
    async def _send(self, callback: Callback, batch: list[Job]) -> None:
        try:
            msg_id = batch[0].batch_id or webhook_id(callback.id, [job.event_id for job in batch])
            body = b"[" + b",".join(job.body for job in batch) + b"]"
            now = self._clock()
            keys = SigningKeys.from_secrets(s.secret for s in callback.active_secrets(now))
            headers = delivery_headers(keys, msg_id, int(now), body, ens=callback.ens_signature)
            timeout = callback.options.timeout or self._config.timeout
            outcome = await self._client.post(callback.url, body, headers, timeout)
            self._settle(callback, batch, msg_id, outcome)
        except Exception:
            log.exception("delivery_crashed", callback_id=callback.id, batch_size=len(batch))
            for job in batch:
                job.next_attempt_at = self._clock() + 1.0
            self.circuit.release_probe()
        finally:
            self._slots.release()
            self._end(batch)

    def _policy(self, callback: Callback) -> RetryPolicy:
        options = callback.options
        if options.retry_schedule is None and options.retry_max_age is None:
            return self._default_policy
        return RetryPolicy(
            options.retry_schedule or self._default_policy.schedule,
            options.retry_max_age or self._default_policy.max_age,
            self._default_policy.retry_after_max,
            self._default_policy.jitter,
        )

    def _settle(self, callback: Callback, batch: list[Job], msg_id: str,
                outcome: HttpOutcome) -> None:
        now = self._clock()
        attempt = AttemptRecord(
            batch_id=msg_id, callback_id=callback.id, job_ids=tuple(j.id for j in batch),
            at=now, status=outcome.status, latency_ms=outcome.latency_ms,
            error=outcome.error, response_excerpt=outcome.excerpt,
        )
        attempt_number = batch[0].attempts + 1
        if outcome.ok:
            result = DeliveryResult(attempt, "delivered", jobs=tuple(batch))
        elif outcome.status == 410:
            result = DeliveryResult(attempt, "dead", reason="gone: receiver answered 410",
                                    jobs=tuple(batch))
        else:
            created = min(j.created_at for j in batch)
            when = self._policy(callback).next_attempt_at(attempt_number, created, now, outcome)
            if when is None:
                result = DeliveryResult(attempt, "dead", reason="retry schedule exhausted",
                                        jobs=tuple(batch))
            else:
                result = DeliveryResult(attempt, "retry", next_attempt_at=when, jobs=tuple(batch))
        emit = log.debug if result.outcome == "delivered" else log.warning
        emit(
            "delivery_attempt",
            callback_id=callback.id, webhook_id=msg_id, event_ids=[j.event_id for j in batch[:10]],
            batch_size=len(batch), attempt=attempt_number, status=outcome.status,
            error=outcome.error, outcome=result.outcome, latency_ms=round(outcome.latency_ms, 2),
        )
        for job in batch:
            job.attempts = attempt_number
            if result.outcome == "retry":
                job.batch_id = msg_id
                job.next_attempt_at = result.next_attempt_at
            else:
                self._window.pop(job.id, None)
        self._report(result, callback)
        self._track_health(callback, outcome, now)

    def _track_health(self, callback: Callback, outcome: HttpOutcome, now: float) -> None:
        was_failing = self.circuit.failing_since is not None
        if outcome.ok:
            if self.circuit.record_success():
                self._notify(CircuitClosed(), callback)
            if was_failing:
                self._notify(FailingSince(None), callback)
            return
        if self.circuit.record_failure(now):
            self._notify(CircuitOpened(self.circuit.consecutive_failures, outcome.status, outcome.error), callback)
        if not was_failing:
            self._notify(FailingSince(self.circuit.failing_since), callback)
        if outcome.status == 410:
            self._notify(DisableRequested("receiver answered 410 Gone"), callback)
        elif self.circuit.should_disable(now):
            days = self.circuit.config.disable_after / 86400
            self._notify(DisableRequested(f"failing continuously for {days:g} days"), callback)
