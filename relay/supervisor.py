"""One owner for background work: every periodic routine and spawned task is named, watched,
and awaited on shutdown.

A routine that fails is logged with its name, counted in ``relay_background_failures_total`` and
run again after a backoff that grows with consecutive failures; a one-off task that fails is
logged and counted the same way. Nothing runs in the background without passing through here,
so ``stop`` is the one place that knows everything still running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from relay.metrics import METRICS

log = structlog.get_logger("relay.supervisor")

BACKOFF_MAX = 60.0


class Routine:
    """A handle on one periodic routine: its owner stops it when its own shutdown order says so.

    Stopping lets a step in progress finish (a result write cancelled while queued behind another
    write would never run, and its results would be lost); only a step that outlasts ``timeout`` is
    cancelled."""

    def __init__(self, name: str, task: asyncio.Task[None], wake: asyncio.Event, stopping: asyncio.Event) -> None:
        self.name = name
        self._task = task
        self._wake = wake
        self._stopping = stopping

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise  # the caller is being cancelled, not the routine
        except TimeoutError:
            log.warning("background_routine_cancelled", routine=self.name, timeout_s=timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def running(self) -> bool:
        return not self._task.done()


class Supervisor:
    def __init__(self) -> None:
        self._routines: dict[str, Routine] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def every(self, name: str, interval: float, step: Callable[[], Awaitable[object]], *,
              wake: asyncio.Event | None = None) -> Routine:
        """Run ``step`` every ``interval`` seconds (sooner when ``wake`` is set) until stopped."""
        if name in self._routines and self._routines[name].running:
            raise RuntimeError(f"routine {name!r} is already running")
        wake = wake or asyncio.Event()
        stopping = asyncio.Event()
        task = asyncio.create_task(self._repeat(name, interval, step, wake, stopping), name=name)
        routine = Routine(name, task, wake, stopping)
        self._routines[name] = routine
        return routine

    def spawn(self, name: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run one piece of work in the background; its failure is reported, not lost."""
        if self._closed:
            work.close()
            raise RuntimeError(f"cannot start {name!r}: shutting down")
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    @property
    def running(self) -> list[str]:
        """Names of everything still running (for logs and tests)."""
        return sorted([r.name for r in self._routines.values() if r.running]
                      + [t.get_name() for t in self._tasks if not t.done()])

    async def stop(self, grace: float = 5.0) -> None:
        """Give spawned work ``grace`` seconds, then cancel it and every routine, and await all."""
        self._closed = True
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                log.warning("background_task_cancelled", routine=task.get_name(), grace_s=grace)
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await asyncio.gather(*(r.stop() for r in self._routines.values()))

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            METRICS.background_failures.labels(task.get_name()).inc()
            log.error("background_task_failed", routine=task.get_name(),
                      error=f"{type(error).__name__}: {error}", exc_info=error)

    @staticmethod
    async def _repeat(name: str, interval: float, step: Callable[[], Awaitable[object]],
                      wake: asyncio.Event, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set():
            delay = interval if not failures else min(BACKOFF_MAX, interval * 2 ** failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)
            wake.clear()
            if stopping.is_set():
                return
            try:
                await step()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                METRICS.background_failures.labels(name).inc()
                log.exception("background_routine_failed", routine=name, failures=failures,
                              error=f"{type(exc).__name__}: {exc}",
                              retry_in=min(BACKOFF_MAX, interval * 2 ** failures))
