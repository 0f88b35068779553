"""Run the shared, synchronous SQL on the event loop, each statement awaiting an async driver.

Every unit of work in ``sql.py`` is a plain function of a DB-API connection, so SQLite (whose
driver is synchronous) and PostgreSQL run the same code. For PostgreSQL that function runs in a
greenlet: when it calls ``execute``, the adapter hands the driver's coroutine to ``await_``, which
switches back to the task in ``run_sync``; the task awaits it on the loop and switches the result
(or the exception) back in. No thread, no blocking call, and the SQL stays written once. This is
the technique SQLAlchemy's asyncio support is built on, on the same well-kept ``greenlet`` library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from greenlet import getcurrent, greenlet

T = TypeVar("T")


class _SyncWork(greenlet):
    """A greenlet running synchronous code on behalf of the task (its parent) that awaits it."""

    def __init__(self, fn: Callable[..., Any], task: greenlet) -> None:
        super().__init__(fn, task)
        self.task = task
        self.gr_context = task.gr_context  # contextvars (log and trace context) follow the task


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, where ``fn`` may call ``await_``; exceptions travel both ways unchanged."""
    work = _SyncWork(fn, getcurrent())
    pending = work.switch(*args)
    while not work.dead:
        try:
            value = await pending
        except BaseException as exc:  # thrown into the work, which may handle it
            pending = work.throw(exc)
        else:
            pending = work.switch(value)
    return pending


def await_(awaitable: Awaitable[T]) -> T:
    """From code running under ``run_sync``: wait for ``awaitable`` on the event loop."""
    current = getcurrent()
    if not isinstance(current, _SyncWork):
        raise RuntimeError("await_ called outside run_sync")
    return current.task.switch(awaitable)
