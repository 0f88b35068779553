"""Batch pins that wait for the writer together are written together, in one transaction.

A lane pins a batch's composition before its first POST (so a crash re-sends the same
``webhook-id``), and under load many lanes pin at once. One by one, 610 pins took 45 % of
PostgreSQL's writer time in the ``instances`` bench: 6.4 ms each, mostly the transaction around a
100-row UPDATE. Now the first pin of a group writes every pin that joined it before its write
began; the others wait for that write and share its outcome.

A pin is one ``batch_pins`` row, its job ids packed (``pack_job_ids``), not a ``batch_id`` written
on each job: PostgreSQL makes every updated row a new version with its index entries. Until the
batch's first result (which writes the batch id on its jobs and deletes the pin), a job loaded
never attempted takes its batch id from the pin that names it (``restore_pins``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.store.models import Job

Pin = tuple[str, str, Sequence[int]]  # batch id, callback id, job ids
PIN_COLUMNS = ("batch_id", "callback_id", "first_job_id", "last_job_id", "job_ids", "created_at")


@dataclass(eq=False)
class PinGroup:
    written: asyncio.Future[None]
    pins: list[Pin] = field(default_factory=list)


class PinGroups:
    # SQLite writes on its writer thread, so taking a group and joining it are guarded by a lock.
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: PinGroup | None = None

    def join(self, pin: Pin) -> tuple[PinGroup, bool]:
        """Add ``pin`` to the group waiting for the writer; True when the caller is the group's
        first pin and so writes it."""
        with self._lock:
            group = self._open
            first = group is None
            if group is None:
                group = self._open = PinGroup(asyncio.get_running_loop().create_future())
            group.pins.append(pin)
            return group, first

    def take(self, group: PinGroup) -> list[Pin]:
        """The group's write begins: pins from now on start a new group."""
        with self._lock:
            if self._open is group:
                self._open = None
            return list(group.pins)

    def close(self, group: PinGroup) -> None:
        with self._lock:
            if self._open is group:
                self._open = None

    def done(self, group: PinGroup, error: BaseException | None) -> None:
        """The group's write ended; every pin of it shares the outcome."""
        self.close(group)
        if group.written.done():
            return
        if error is None:
            group.written.set_result(None)
            return
        if isinstance(error, asyncio.CancelledError):  # the first pin was cancelled, not the others
            error = RuntimeError("the pins' write was cancelled")
        group.written.set_exception(error)
        group.written.exception()  # retrieved: a group whose only pin failed has no one else to tell


def pin_rows(pins: Iterable[Pin], now: float) -> list[tuple[Any, ...]]:
    """Rows in ``PIN_COLUMNS`` order."""
    return [(batch_id, callback_id, min(ids), max(ids), pack_job_ids(ids), now) for batch_id, callback_id, ids in pins]


def pack_job_ids(ids: Sequence[int]) -> bytes:
    """Job ids as little-endian signed 64-bit integers (raises OverflowError beyond)."""
    packed = array("q", ids)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def unpack_job_ids(data: bytes) -> list[int]:
    packed = array("q")
    packed.frombytes(bytes(data))
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()


def restore_pins(jobs: Sequence[Job], read_pins: Callable[[int, int], Iterable[tuple[str, bytes]]]) -> None:
    """Give each job never attempted its batch id from the pins that ``read_pins(low, high)`` returns
    for that job id range, oldest first: a later pin of a job wins, as it was pinned again after a
    write reported failed. An attempted job's own row holds its batch id; no pin is read without a
    job that could take one."""
    unpinned = {job.id: job for job in jobs if job.batch_id is None and job.attempts == 0}
    if not unpinned:
        return
    for batch_id, packed in read_pins(min(unpinned), max(unpinned)):
        for job_id in unpack_job_ids(packed):
            job = unpinned.get(job_id)
            if job is not None:
                job.batch_id = batch_id
