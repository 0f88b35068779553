"""Runs the durable operations of the store: claims due ones under a lease, runs them step by step
under the supervisor, and writes progress back after every step.

Progress is written with the lease renewed in the same statement; the write fails once an operator
cancelled the operation (or another instance took it over after this one stalled), and the runner
stops there. An instance that dies simply stops renewing: after ``lease`` seconds the next poll on
any instance claims the operation and carries on from the progress written last. A step may repeat
after a crash, so each kind keeps its steps safe to repeat (at-least-once, like delivery).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from relay.ids import new_id
from relay.metrics import METRICS
from relay.store.base import Store
from relay.store.models import Operation
from relay.supervisor import Routine, Supervisor

log = structlog.get_logger("relay.operations")


@dataclass(frozen=True)
class Step:
    """What one step did: ``done`` items more, the ``total`` if now known, whether the operation is
    ``finished``, how long to ``pause`` before the next step (rate limiting), and the ``cursor`` the
    next step starts from (None keeps the current one)."""

    done: int = 0
    total: int | None = None
    finished: bool = False
    pause: float = 0.0
    cursor: str | None = None


class OperationKind(Protocol):
    name: str

    async def step(self, op: Operation) -> Step:
        """Do the next bounded piece of ``op``; ``op.done`` and ``op.total`` say how far it got."""


class OperationRunner:
    def __init__(self, store: Store, kinds: Iterable[OperationKind], supervisor: Supervisor, *,
                 clock: Callable[[], float] = time.time, lease: float = 30.0, poll: float = 1.0,
                 concurrency: int = 4) -> None:
        self._store = store
        self._kinds = {k.name: k for k in kinds}
        self._supervisor = supervisor
        self._clock = clock
        self._lease = lease
        self._poll = poll
        self._concurrency = concurrency
        self.owner = new_id("inst")
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._routine: Routine | None = None

    def start(self) -> None:
        self._routine = self._supervisor.every("operations", self._poll, self._claim_due, wake=self._wake)
        self._wake.set()  # operations a previous run left behind

    async def stop(self) -> None:
        """Stop claiming, interrupt running operations, and release their leases so another
        instance (or the next start) resumes them at once."""
        if self._routine is not None:
            await self._routine.stop()
        running = dict(self._running)
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        for op_id in running:
            try:
                await self._store.release_operation(op_id, self.owner)
            except Exception as exc:  # the lease expires on its own
                log.warning("operation_release_failed", operation_id=op_id, error=f"{type(exc).__name__}: {exc}")

    def wake(self) -> None:
        """Look for due operations now rather than at the next poll."""
        self._wake.set()

    async def submit(self, account_id: str, kind: str, params: dict[str, Any], *, delay: float = 0.0,
                     prefix: str = "op") -> Operation:
        """Store a new operation and wake the runner; it starts within a poll on some instance."""
        if kind not in self._kinds:
            raise ValueError(f"unknown operation kind {kind!r}")
        now = self._clock()
        op = Operation(new_id(prefix), account_id, kind, params, "queued", now, now, not_before=now + delay)
        await self._store.create_operation(op)
        self._wake.set()
        return op

    @property
    def running(self) -> list[str]:
        return sorted(self._running)

    async def _claim_due(self) -> None:
        while len(self._running) < self._concurrency:
            now = self._clock()
            op = await self._store.claim_operation(self.owner, now, now + self._lease)
            if op is None:
                return
            task = self._supervisor.spawn(f"operation-{op.kind}-{op.id}", self._run(op))
            self._running[op.id] = task
            task.add_done_callback(functools.partial(self._forget, op.id))

    def _forget(self, op_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(op_id, None)

    async def _run(self, op: Operation) -> None:
        kind = self._kinds.get(op.kind)
        bound = log.bind(operation_id=op.id, kind=op.kind, account_id=op.account_id)
        if kind is None:
            await self._finish(op, "failed", f"unknown operation kind {op.kind!r}")
            return
        bound.info("operation_started", done=op.done, total=op.total)
        try:
            while True:
                step = await kind.step(op)
                op = replace(op, done=op.done + step.done,
                             total=step.total if step.total is not None else op.total,
                             cursor=step.cursor if step.cursor is not None else op.cursor)
                now = self._clock()
                if not await self._store.record_operation_progress(op.id, self.owner, op.done, op.total, op.cursor,
                                                                   now, now + self._lease):
                    bound.info("operation_interrupted", reason="cancelled, paused, or taken over after a lapsed "
                               "lease", done=op.done)
                    return
                if step.finished:
                    await self._finish(op, "done", None)
                    bound.info("operation_finished", done=op.done, total=op.total)
                    return
                if step.pause > 0 and not await self._pause(op, step.pause, bound):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            bound.exception("operation_failed", done=op.done, error=error)
            await self._finish(op, "failed", error)

    async def _pause(self, op: Operation, seconds: float, bound: Any) -> bool:
        """Wait between steps without letting the lease lapse (a pause may be longer than the lease):
        renew it every third of a lease. False once the operation was cancelled, paused or taken."""
        deadline = self._clock() + seconds
        while (left := deadline - self._clock()) > 0:
            await asyncio.sleep(min(left, self._lease / 3))
            now = self._clock()
            if now >= deadline:
                break  # the next step's progress write renews the lease
            if not await self._store.record_operation_progress(op.id, self.owner, op.done, op.total, op.cursor,
                                                               now, now + self._lease):
                bound.info("operation_interrupted", reason="cancelled, paused, or taken over", done=op.done)
                return False
        return True

    async def _finish(self, op: Operation, state: str, error: str | None) -> None:
        await self._store.finish_operation(op.id, self.owner, state, error, self._clock())
        METRICS.operations_run.labels(op.kind, state).inc()
