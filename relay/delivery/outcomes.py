"""What follows an attempt, in one place: metrics, dead letters on their topic, the dead-letter
alert, circuit and health transitions, disabling a callback, and their events on ``relay.ops``.

Lanes report two things: a ``DeliveryResult`` per attempt (the dispatcher writes it to the store
and hands it here) and typed ``LaneEvent``s for health transitions. ``Outcomes`` reacts to both and
starts its work under the supervisor, awaiting it on ``close``: nothing climbs up to ``app.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from relay.metrics import METRICS
from relay.publisher import Publisher
from relay.store.base import Store
from relay.store.models import Callback, DeliveryResult
from relay.supervisor import Supervisor

log = structlog.get_logger("relay.outcomes")


@dataclass(frozen=True, slots=True)
class CircuitOpened:
    consecutive_failures: int
    last_status: int | None
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {"consecutiveFailures": self.consecutive_failures, "lastStatus": self.last_status,
                "lastError": self.last_error}


@dataclass(frozen=True, slots=True)
class CircuitClosed:
    pass


@dataclass(frozen=True, slots=True)
class FailingSince:
    """The callback started failing at ``since`` (None: it succeeds again)."""

    since: float | None


@dataclass(frozen=True, slots=True)
class DisableRequested:
    reason: str


@dataclass(frozen=True, slots=True)
class Throttled:
    """The endpoint answered 429 with Retry-After: no sends to it before ``until``, on any instance."""

    until: float


LaneEvent = CircuitOpened | CircuitClosed | FailingSince | DisableRequested | Throttled
LaneEventSink = Callable[[LaneEvent, Callback], None]


@dataclass(frozen=True, slots=True)
class OutcomeTopics:
    deadletter_topic: str
    ops_topic: str
    deadletter_alert_threshold: int


class Outcomes:
    def __init__(self, store: Store, publisher: Publisher, topics: OutcomeTopics,
                 refresh_routing: Callable[[], Awaitable[Any]], clock: Callable[[], float],
                 supervisor: Supervisor, dead_letters: int = 0) -> None:
        self._store = store
        self._publisher = publisher
        self._topics = topics
        self._refresh_routing = refresh_routing
        self._clock = clock
        self.dead_letters = dead_letters  # dead letters in the store, for the alert and the gauge
        self._disabling: set[str] = set()
        self._supervisor = supervisor
        self._tasks: set[asyncio.Task[Any]] = set()

    async def close(self, timeout: float = 5.0) -> None:
        """Let the writes and publications already started finish (bounded)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    # -- attempts ---------------------------------------------------------------------------
    def on_result(self, result: DeliveryResult, callback: Callback) -> None:
        label = METRICS.callback(callback.id)
        METRICS.child(METRICS.deliveries, label, result.outcome).inc()
        METRICS.attempt_latency.observe(result.attempt.latency_ms / 1000)
        if result.outcome == "delivered":
            METRICS.child(METRICS.delivered_events, label).inc(len(result.jobs))
            now = self._clock()
            METRICS.end_to_end.observe_many([max(0.0, now - job.event_timestamp_ms / 1000)
                                             for job in result.jobs if job.event_timestamp_ms])
        elif result.outcome == "dead":
            METRICS.child(METRICS.dead_letters, label).inc(len(result.jobs))
            self._spawn("publish-dead-letters", self._publish_dead_letters(result))
            before, self.dead_letters = self.dead_letters, self.dead_letters + len(result.jobs)
            threshold = self._topics.deadletter_alert_threshold
            if before < threshold <= self.dead_letters:
                log.warning("deadletter_threshold_crossed", deadletters=self.dead_letters)
                self._spawn("ops-event", self._ops_event("deadletters.threshold_crossed", callback,
                                            {"deadLetters": self.dead_letters, "threshold": threshold}))

    # -- health transitions -------------------------------------------------------------------
    def on_lane_event(self, event: LaneEvent, callback: Callback) -> None:
        match event:
            case FailingSince(since=since):
                self._spawn("record-failing-since", self._store.set_failing_since(callback.id, since))
            case CircuitOpened():
                METRICS.circuit_changed(callback.id, is_open=True)
                log.warning("circuit_opened", callback_id=callback.id, **event.to_json())
                self._spawn("ops-event", self._ops_event("callback.circuit_opened", callback, event.to_json()))
            case CircuitClosed():
                METRICS.circuit_changed(callback.id, is_open=False)
                log.info("circuit_closed", callback_id=callback.id)
                self._spawn("ops-event", self._ops_event("callback.circuit_closed", callback, {}))
            case Throttled(until=until) if (callback.throttled_until or 0) < until - 1.0:
                log.info("callback_throttled", callback_id=callback.id, until=until)
                self._spawn("record-throttle", self._throttle(callback, until))
            case DisableRequested(reason=reason) if callback.id not in self._disabling:
                self._disabling.add(callback.id)
                self._spawn("disable-callback", self._disable(callback, reason))

    # -- the work they start ------------------------------------------------------------------
    def _spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> None:
        task = self._supervisor.spawn(name, coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _throttle(self, callback: Callback, until: float) -> None:
        if await self._store.set_throttled_until(callback.id, until):
            await self._refresh_routing()

    async def _publish_dead_letters(self, result: DeliveryResult) -> None:
        records = [
            ({
                "eventId": job.event_id,
                "callbackId": result.attempt.callback_id,
                "webhookId": result.attempt.batch_id,
                "reason": result.reason,
                "attempts": job.attempts,
                "lastStatus": result.attempt.status,
                "lastError": result.attempt.error,
                "event": orjson.Fragment(job.body),
            }, job.event_id.encode())
            for job in result.jobs
        ]
        try:
            await self._publisher.publish_many(self._topics.deadletter_topic, records)
        except Exception:
            log.exception("deadletter_publish_failed", callback_id=result.attempt.callback_id)

    async def _disable(self, callback: Callback, reason: str) -> None:
        try:
            await self._store.set_callback_enabled(callback.id, False, reason)
            await self._refresh_routing()
        finally:
            self._disabling.discard(callback.id)
        METRICS.callbacks_disabled.inc()
        log.warning("callback_disabled", callback_id=callback.id, reason=reason)
        await self._ops_event("callback.disabled", callback, {"reason": reason})

    async def _ops_event(self, kind: str, callback: Callback, data: dict[str, Any]) -> None:
        """Operational events on relay.ops, keyed by callback id; a broker outage only logs. A
        callback's own transitions are also kept in the store, for its page in the console."""
        if kind.startswith("callback."):
            try:
                await self._store.record_health_event(callback.id, kind, orjson.dumps(data).decode(), self._clock())
            except Exception as exc:
                log.warning("health_history_failed", callback_id=callback.id, kind=kind,
                            error=f"{type(exc).__name__}: {exc}")
        try:
            await self._publisher.publish(self._topics.ops_topic, {
                "type": kind, "callbackId": callback.id, "accountId": callback.account_id,
                "at": self._clock(), **data,
            }, key=callback.id.encode())
        except Exception:
            log.exception("ops_event_failed", kind=kind, callback_id=callback.id)
