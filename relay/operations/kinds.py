"""What each kind of durable operation does, one bounded step at a time (see ``runner.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import orjson
import structlog

from relay.delivery.direct import post_signed
from relay.delivery.endpoint import EndpointSender
from relay.operations.runner import Step
from relay.store.base import NotFound, PreconditionFailed, Store
from relay.store.models import Callback, Operation
from relay.store.views import DeadLetterFilter

log = structlog.get_logger("relay.operations")

Requeue = Callable[[str], None]
HANDSHAKE_TIMEOUT = 30.0


class Redrive:
    """Replays the dead letters matching ``filters`` at ``rate`` per second, oldest first. Each
    step replays one chunk in one transaction; replayed letters leave the table, so a repeated step
    after a crash cannot replay a letter twice."""

    name = "redrive"

    def __init__(self, store: Store, requeue: Requeue, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._requeue = requeue
        self._clock = clock

    @staticmethod
    def params(selection: DeadLetterFilter, rate: float) -> dict[str, object]:
        return {"filters": selection.stored(), "rate": rate}

    async def step(self, op: Operation) -> Step:
        selection = DeadLetterFilter.from_stored(dict(op.params["filters"]))
        rate = float(op.params["rate"])
        total = op.total
        if total is None:
            total = await self._store.count_deadletters_matching(op.account_id, selection)
        rows = await self._store.list_deadletters_page(op.account_id, selection, 0, max(1, min(500, int(rate))))
        if not rows:
            return Step(total=total, finished=True)
        for callback_id in await self._store.replay_deadletters(op.account_id, [r.id for r in rows],
                                                                 self._clock()):
            self._requeue(callback_id)
        return Step(done=len(rows), total=max(total, op.done + len(rows)), pause=len(rows) / rate)


class Handshake:
    """POSTs ``{callbackId, verificationKey}`` to a new or changed callback URL. The key is in the
    operation's sealed params; a callback verified (or deleted) meanwhile needs no POST.

    A CloudEvents callback may prove ownership the CloudEvents way instead: an OPTIONS request with
    ``WebHook-Request-Origin``; an endpoint answering 2xx with ``WebHook-Allowed-Origin`` (our origin
    or ``*``) is verified at once, and its ``WebHook-Allowed-Rate`` (requests a minute) becomes its
    request rate limit. Otherwise the key is POSTed as for any callback."""

    name = "handshake"

    def __init__(self, store: Store, sender: EndpointSender, clock: Callable[[], float] = time.time,
                 origin: str = "relay.invalid") -> None:
        self._store = store
        self._sender = sender
        self._clock = clock
        self._origin = origin

    async def step(self, op: Operation) -> Step:
        try:
            callback = await self._store.get_callback(str(op.params["callbackId"]), op.account_id)
        except NotFound:
            return Step(finished=True)
        if callback.verified:
            return Step(finished=True)
        if callback.options.format == "cloudevents" and await self._validated(callback):
            return Step(done=1, total=1, finished=True)
        payload = orjson.dumps({"callbackId": callback.id, "verificationKey": op.params["verificationKey"]})
        outcome = await post_signed(self._sender, callback, payload, f"verify_{callback.id}", self._clock(),
                                    HANDSHAKE_TIMEOUT)
        log.info("verification_sent", callback_id=callback.id, operation_id=op.id, status=outcome.status,
                 error=outcome.error)
        return Step(done=1, total=1, finished=True)


    async def _validated(self, callback: Callback) -> bool:
        tls = self._sender.tls_context(callback.id, callback.auth.mtls) if callback.auth.mtls else None
        status, headers, error = await self._sender.client.validation_request(
            callback.url, {"webhook-request-origin": self._origin}, HANDSHAKE_TIMEOUT, tls)
        allowed = headers.get("webhook-allowed-origin", "")
        if status is None or not 200 <= status < 300 or allowed not in ("*", self._origin):
            log.info("cloudevents_validation_refused", callback_id=callback.id, status=status, error=error,
                     allowed_origin=allowed or None)
            return False
        # The allowed rate first: nothing is delivered before the callback is verified, so nothing
        # goes out faster than the endpoint allows.
        rate = headers.get("webhook-allowed-rate", "")
        if rate.isdigit() and int(rate) > 0:
            limited = replace(callback, options=replace(callback.options, rate_requests=int(rate) / 60))
            try:
                await self._store.update_callback(limited, ["options"], expected_version=callback.version)
            except PreconditionFailed:
                log.info("allowed_rate_not_applied", callback_id=callback.id, reason="the callback changed meanwhile")
        await self._store.mark_verified(callback.id)
        log.info("callback_verified", callback_id=callback.id, proof="cloudevents validation")
        return True


class ReleaseHeld:
    """Releases, in order, the events a paused subscription held. Run once more a little after a
    resume: an instance whose routing had not reloaded yet may have held a few more meanwhile."""

    name = "release-held"

    def __init__(self, store: Store, requeue: Requeue) -> None:
        self._store = store
        self._requeue = requeue

    async def step(self, op: Operation) -> Step:
        callbacks = await self._store.release_held(str(op.params["subscriptionId"]))
        for callback_id in callbacks:
            self._requeue(callback_id)
        return Step(done=1, total=1, finished=True)
