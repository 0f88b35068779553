"""Recover a time window: send a callback every stored event it was routed in the window again —
delivered or not — in job order, at a chosen rate, as a durable operation.

Sends go outside the lane (``post_signed``), one batch per step of at most the callback's batch
size and one second's worth of the rate. Each carries ``webhook-recovered: true`` and a new
``webhook-id`` derived from the operation and the events, so a step repeated after a crash sends the
same id and receivers can deduplicate. A failed POST is retried with backoff without moving on (so
per-key order holds); after ``MAX_FAILURES`` in a row the operation fails with the endpoint's answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from relay.delivery.direct import post_signed
from relay.delivery.endpoint import EndpointSender
from relay.delivery.shape import payload
from relay.operations.runner import Step
from relay.signing import webhook_id
from relay.store.base import Store
from relay.store.models import Job, Operation

log = structlog.get_logger("relay.operations")

MAX_FAILURES = 8
TIMEOUT = 10.0


class RecoveryFailed(Exception):
    pass


class Recover:
    name = "recover"

    def __init__(self, store: Store, sender: EndpointSender, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._sender = sender
        self._clock = clock
        self._failures: dict[str, int] = {}

    @staticmethod
    def params(callback_id: str, since: float, until: float, event_types: list[str] | None,
               rate: float) -> dict[str, object]:
        return {"callbackId": callback_id, "since": since, "until": until, "eventTypes": event_types, "rate": rate}

    async def step(self, op: Operation) -> Step:
        p = op.params
        callback = await self._store.get_callback(str(p["callbackId"]), op.account_id)
        window = (int(float(p["since"]) * 1000), int(float(p["until"]) * 1000), p["eventTypes"] or None)
        total = op.total
        if total is None:
            total = await self._store.count_routed(callback.id, *window)
        rate = float(p["rate"])
        size = max(1, min(callback.max_batch_size, int(rate)))
        items = await self._store.routed_page(callback.id, *window, int(op.cursor or 0), size)
        if not items:
            self._failures.pop(op.id, None)
            return Step(total=total, finished=True)
        msg_id = webhook_id(f"{callback.id}/{op.id}", [item.event_id for item in items])
        shaped = payload(callback, [Job(item.job_id, item.event_id, callback.id, None, item.body, 0.0)
                                    for item in items])
        for job, reason in shaped.refused:  # the callback's transformation cannot shape it: skipped, said
            log.warning("recovery_event_skipped", operation_id=op.id, event_id=job.event_id, reason=reason)
        if not shaped.sent:
            return Step(done=len(items), total=max(total, op.done + len(items)), cursor=str(items[-1].job_id))
        outcome = await post_signed(self._sender, callback, shaped.body, msg_id, self._clock(),
                                    callback.options.timeout or TIMEOUT, {"webhook-recovered": "true"},
                                    shaped.content_type)
        if not outcome.ok:
            failures = self._failures.get(op.id, 0) + 1
            self._failures[op.id] = failures
            answer = f"HTTP {outcome.status}" if outcome.status is not None else outcome.error
            log.warning("recovery_send_failed", operation_id=op.id, callback_id=callback.id, webhook_id=msg_id,
                        attempt=failures, status=outcome.status, error=outcome.error)
            if failures >= MAX_FAILURES:
                self._failures.pop(op.id, None)
                raise RecoveryFailed(f"the endpoint failed {failures} times in a row (last: {answer})")
            return Step(total=total, pause=min(60.0, 0.5 * 2 ** failures))
        self._failures.pop(op.id, None)
        return Step(done=len(items), total=max(total, op.done + len(items)), cursor=str(items[-1].job_id),
                    pause=len(items) / rate)
