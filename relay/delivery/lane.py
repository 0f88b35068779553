"""One lane per callback: the I/O around a window — store reads, signing, the POST, retries, health.

Which batch goes next is the :class:`~relay.delivery.window.Window`'s decision (per-key FIFO,
batch pinning, partition boundaries). The lane pins a batch's composition in the store before its
first POST, so its ``webhook-id`` stays the same across retries and across a crash, bounds the
requests in flight, and hands each result to the outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import structlog

from relay import tracing
from relay.delivery.circuit import CircuitBreaker, CircuitConfig
from relay.delivery.concurrency import AdaptiveLimit
from relay.delivery.endpoint import EndpointSender
from relay.delivery.http import HttpOutcome
from relay.delivery.outcomes import (
    CircuitClosed,
    CircuitOpened,
    DisableRequested,
    FailingSince,
    LaneEventSink,
    Throttled,
)
from relay.delivery.ratelimit import Limiter
from relay.delivery.retry import RetryPolicy
from relay.delivery.shape import payload
from relay.delivery.window import Window
from relay.metrics import METRICS
from relay.signing import SigningKeys, delivery_headers, webhook_id
from relay.store.base import Store
from relay.store.models import AttemptRecord, Callback, DeliveryResult, Job, Outcome
from relay.supervisor import Supervisor
from relay.telemetry import Telemetry

log = structlog.get_logger("relay.delivery")


@dataclass(frozen=True)
class LaneConfig:
    max_in_flight: int = 64  # the ceiling; the limit in use adapts below it (relay.delivery.concurrency)
    window: int = 5000
    linger: float = 0.005
    timeout: float = 10.0
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    initial_in_flight: int = 8


class Lane:
    def __init__(
        self,
        callback_id: str,
        *,
        callback: Callable[[str], Callback | None],
        store: Store,
        sender: EndpointSender,
        policy: RetryPolicy,
        config: LaneConfig,
        global_slots: asyncio.Semaphore,
        report: Callable[[DeliveryResult, Callback], None],
        notify: LaneEventSink,
        owned: Callable[[], Collection[tuple[str, int]] | None] = lambda: None,
        share: Callable[[], float] = lambda: 1.0,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.callback_id = callback_id
        self._owned = owned
        self._callback = callback
        self._store = store
        self._sender = sender
        self._default_policy = policy
        self._config = config
        self._slots = global_slots
        self._report = report
        self._notify = notify
        self._clock = clock
        self._window = Window(config.window)
        self._share = share
        self._telemetry = telemetry or Telemetry()
        self._limiter = Limiter()
        self._paused_until = 0.0  # a 429's Retry-After seen here, before routing carries it everywhere
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        # A delivered attempt's line is debug: built only when it is written (~2.7 µs a POST otherwise),
        # at the level configured when the lane was made.
        self._log_delivered = log.is_enabled_for(logging.DEBUG)
        current = callback(callback_id)
        self.circuit = CircuitBreaker(config.circuit, current.failing_since if current else None)
        self.concurrency = AdaptiveLimit(self._ceiling(current), config.initial_in_flight)

    # -- feeding --------------------------------------------------------------------------
    def offer(self, jobs: list[Job]) -> None:
        """New jobs from ingest (already durable). Beyond the window they stay in the store."""
        self._window.offer(jobs)
        self._wake.set()

    def requeue(self) -> None:
        """Jobs were put back to pending in the store (dead-letter replay): reload from the start."""
        self._window.reload()
        self._wake.set()

    async def _load(self) -> None:
        if not self._window.wants_load():
            return
        owned = self._owned()
        if owned is not None and not owned:
            return
        self._window.begin_load()
        room = self._window.room
        jobs = await self._store.load_pending(self.callback_id, self._window.loaded_upto, room,
                                              None if owned is None else sorted(owned))
        self._window.loaded(jobs, room)

    def forget(self) -> set[asyncio.Task[None]]:
        """Partition ownership is changing: drop every job not in flight (the store has them all;
        the next owner loads them from there) and return the sends still in flight."""
        self._window.forget()
        return set(self._sends)

    @property
    def depth(self) -> int:
        return len(self._window)

    @property
    def in_flight(self) -> int:
        return self._window.batches_in_flight

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, supervisor: Supervisor) -> None:
        """The lane's loop runs under the supervisor; its sends are its own, awaited in ``stop``."""
        self._task = supervisor.spawn(f"lane-{self.callback_id}", self._run())

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
            if pending:  # their results are unknown: the jobs stay pending and are sent again (same webhook-id)
                log.warning("sends_cancelled_at_stop", callback_id=self.callback_id, sends=len(pending), grace_s=grace)
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
        self.concurrency.bound(self._ceiling(callback))
        self._limiter.configure(callback.options.rate_limit, self._share())
        max_batch = min(callback.max_batch_size, self._limiter.max_batch or callback.max_batch_size)
        lingered = False
        while self._window.batches_in_flight < self.concurrency.limit:
            now = self._clock()
            if not self.circuit.allows(now):
                reopens = self.circuit.reopens_at()
                return None if reopens is None else max(0.01, reopens - now)
            paused = max(self._paused_until, callback.throttled_until or 0.0) - now
            if paused > 0:
                return self._throttled(callback, paused)
            batch, next_due = self._window.next_batch(max_batch, now, self._owned())
            if not batch:
                self.circuit.release_probe()
                return None if next_due is None else max(0.0, next_due - now)
            fresh = batch[0].batch_id is None
            if (fresh and not lingered and len(batch) < max_batch
                    and self._config.linger > 0 and max_batch > 1):
                self.circuit.release_probe()
                lingered = True
                await asyncio.sleep(self._config.linger)
                continue
            lingered = False
            wait = self._limiter.wait(len(batch), now)
            if wait > 0:
                self.circuit.release_probe()
                return self._throttled(callback, wait)
            self._limiter.take(len(batch), now)
            self._window.begin(batch)
            pin = fresh and len(batch) > 1
            if pin:
                self._window.pin(batch, webhook_id(callback.id, [job.event_id for job in batch]))
            try:
                await self._slots.acquire()
            except BaseException:
                self._end(batch)
                raise
            task = asyncio.create_task(self._send(callback, batch, pin))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        return None

    def _ceiling(self, callback: Callback | None) -> int:
        return (callback.options.max_in_flight if callback else None) or self._config.max_in_flight

    def _throttled(self, callback: Callback, wait: float) -> float:
        """Held back by the rate limit or a Retry-After pause: no attempt is spent, the wait is counted."""
        METRICS.child(METRICS.throttled, METRICS.callback(callback.id)).inc(wait)
        return max(0.001, wait)

    def _end(self, batch: list[Job]) -> None:
        self._window.end(batch)
        self._wake.set()

    # -- sending --------------------------------------------------------------------------
    async def _send(self, callback: Callback, batch: list[Job], pin: bool = False) -> None:
        """``pin``: write the batch's composition first. Here and not in the dispatch loop, so that
        the loop starts the other batches meanwhile: their pins wait for the writer together,
        not one after another behind ingest's transactions."""
        try:
            msg_id = batch[0].batch_id or webhook_id(callback.id, [job.event_id for job in batch])
            if pin:
                await self._store.assign_batch(msg_id, callback.id, [job.id for job in batch])
                pin = False
            shaped = payload(callback, batch)
            now = self._clock()
            for job, reason in shaped.refused:
                self._refuse(callback, job, msg_id, reason, now)
            if not shaped.sent:
                return
            keys = SigningKeys.from_secrets(s.secret for s in callback.active_secrets(now))
            headers = delivery_headers(keys, msg_id, int(now), shaped.body, ens=callback.ens_signature)
            headers["content-type"] = shaped.content_type
            # One trace per request: the first event's (W3C allows one parent).
            trace = next((job.traceparent for job in shaped.sent if job.traceparent), None)
            span = self._telemetry.delivering(trace, callback.id, [j.event_id for j in shaped.sent],
                                              shaped.sent[0].attempts + 1, msg_id)
            if span is not None and span.traceparent:
                headers[tracing.HEADER] = span.traceparent
            elif trace is not None:
                headers[tracing.HEADER] = tracing.child(trace)
            timeout = callback.options.timeout or self._config.timeout
            try:
                outcome = await self._sender.post(callback, shaped.body, headers, timeout)
                self.concurrency.answered(outcome.status, outcome.latency_ms)
                result = self._settle(callback, shaped.sent, msg_id, outcome)
            except BaseException:
                if span is not None:
                    span.finish(None, "crashed", "the send did not complete")
                raise
            if span is not None:
                span.finish(outcome.status, result, outcome.error)
        except Exception:
            log.exception("delivery_crashed", callback_id=callback.id, batch_size=len(batch))
            if pin:  # its composition never reached the store: nothing was sent under that id
                self._window.unpin(batch)
            self._window.hold(batch, self._clock() + 1.0)
            self.circuit.release_probe()
        finally:
            self._slots.release()
            self._end(batch)

    def _refuse(self, callback: Callback, job: Job, msg_id: str, reason: str, now: float) -> None:
        """The callback's transformation cannot shape this event: it becomes a dead letter with the
        reason (retrying would fail the same way), and the rest of the batch goes on. The endpoint did
        nothing wrong, so its circuit and health do not hear of it."""
        attempt = AttemptRecord(batch_id=msg_id, callback_id=callback.id, job_ids=(job.id,), at=now, status=None,
                                latency_ms=0.0, error=reason, response_excerpt=None)
        log.warning("transformation_failed", callback_id=callback.id, event_id=job.event_id, webhook_id=msg_id,
                    reason=reason)
        self._window.settled([job], job.attempts + 1)
        self._report(DeliveryResult(attempt, "dead", reason=reason, jobs=(job,)), callback)

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

    def _settle(self, callback: Callback, batch: list[Job], msg_id: str, outcome: HttpOutcome) -> str:
        """Record the attempt and decide: delivered, retry or dead (returned)."""
        now = self._clock()
        attempt = AttemptRecord(
            batch_id=msg_id, callback_id=callback.id, job_ids=tuple(j.id for j in batch),
            at=now, status=outcome.status, latency_ms=outcome.latency_ms,
            error=outcome.error, response_excerpt=outcome.excerpt,
        )
        attempt_number = batch[0].attempts + 1
        kind: Outcome = "delivered"
        reason: str | None = None
        when: float | None = 0.0
        if outcome.status == 410:
            kind, reason = "dead", "gone: receiver answered 410"
        elif not outcome.ok:
            created = min(j.created_at for j in batch)
            when = self._policy(callback).next_attempt_at(attempt_number, created, now, outcome)
            kind, reason = ("dead", "retry schedule exhausted") if when is None else ("retry", None)
        # A batch id on a job never attempted comes from a pin (pins.py), which this answer ends.
        result = DeliveryResult(attempt, kind, next_attempt_at=when or 0.0, reason=reason, jobs=tuple(batch),
                                ends_pin=attempt_number == 1 and batch[0].batch_id is not None)
        delivered = result.outcome == "delivered"
        if self._log_delivered or not delivered:
            (log.debug if delivered else log.warning)(
                "delivery_attempt",
                callback_id=callback.id, webhook_id=msg_id, event_ids=[j.event_id for j in batch[:10]],
                batch_size=len(batch), attempt=attempt_number, status=outcome.status,
                error=outcome.error, outcome=result.outcome, latency_ms=round(outcome.latency_ms, 2),
                trace_id=tracing.trace_id(next((j.traceparent for j in batch if j.traceparent), None)),
            )
        if result.outcome == "retry":
            self._window.retry_at(batch, result.next_attempt_at, attempt_number, msg_id)
        else:
            self._window.settled(batch, attempt_number)
        self._report(result, callback)
        self._track_health(callback, outcome, now)
        return result.outcome

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
        if outcome.status == 429 and outcome.retry_after:
            self._paused_until = max(self._paused_until, now + outcome.retry_after)
            self._notify(Throttled(self._paused_until), callback)
        if outcome.status == 410:
            self._notify(DisableRequested("receiver answered 410 Gone"), callback)
        elif self.circuit.should_disable(now):
            days = self.circuit.config.disable_after / 86400
            self._notify(DisableRequested(f"failing continuously for {days:g} days"), callback)
