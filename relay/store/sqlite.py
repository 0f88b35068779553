"""Embedded SQLite store (WAL): one file, one relay instance.

Writes go through a single writer thread — SQLite allows one writer anyway — and reads use two
more connections, which WAL lets run beside the writer: one for the delivery engine's window
loads, one for everything else (the API among it). A fourth connection copies the WAL back into
the database file (``_Checkpointer``), so commits do not have to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson
import structlog

from relay.crypto import SecretBox
from relay.store.bulk import ValuesBulk
from relay.store.migrations import SQLITE_MIGRATIONS
from relay.store.models import IncomingEvent, Job, NewJob
from relay.store.rows import RowShape, quoted
from relay.store.sql import (
    EVENT_COLUMNS,
    EVENT_CONFLICT,
    JOB_COLUMNS,
    JOB_CONFLICT,
    JOB_RETURNED,
    Connection,
    SqlStore,
    event_rows,
    job_rows,
    pending_jobs,
)

T = TypeVar("T")
log = structlog.get_logger("relay.store")
# The writer's own checkpoint, only for when the checkpointer cannot run (it copies after every
# commit past this size, and a checkpointer finding that one under way must skip its turn).
_BACKSTOP_PAGES = 65_536


class SqliteStore(SqlStore):
    REJECTED_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, OverflowError, UnicodeEncodeError)
    CONSTRAINT_ERRORS = (sqlite3.IntegrityError,)
    # "database is locked", "disk I/O error", "database or disk is full", "unable to open"
    UNAVAILABLE_ERRORS = (sqlite3.OperationalError,)

    _bulk: ValuesBulk  # multi-row VALUES, and the last rowid written (``insert_last``)

    def __init__(self, path: str | Path, box: SecretBox) -> None:
        super().__init__(box, ValuesBulk())
        self._path = str(path)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._write_conn: sqlite3.Connection | None = None
        self._reader = _Reader("sqlite-reader")
        self._bulk_reader = _Reader("sqlite-bulk-reader")
        self._checkpointer = _Checkpointer()

    @classmethod
    def from_url(cls, url: str, box: SecretBox) -> SqliteStore:
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, box)

    async def start(self) -> None:
        # Owner-only: the file holds sealed secrets, hashed keys and every event. SQLite gives the
        # -wal and -shm files the database file's mode. Created here, before any connection: closing
        # any descriptor of the file drops every POSIX lock this process holds on it, SQLite's
        # included, and another process (`relay serve --workers N`) could then write beside ours.
        os.close(os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self._path, 0o600)
        loop = asyncio.get_running_loop()
        self._write_conn = await loop.run_in_executor(self._writer, self._connect)
        await loop.run_in_executor(self._writer, _migrate, self._write_conn)
        await loop.run_in_executor(self._writer, self._write_conn.execute,
                                   f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")
        await self._reader.open(self._connect)
        await self._bulk_reader.open(self._connect)
        await self._checkpointer.start(self._connect)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA cache_size=-32768")
        conn.execute("PRAGMA temp_store=MEMORY")
        # The size limit truncates the WAL file once it starts over (see _Checkpointer).
        conn.execute("PRAGMA journal_size_limit=67108864")
        return conn

    def _insert_events(self, c: Connection, events: Sequence[IncomingEvent], now: float) -> dict[str, int]:
        """Without ``RETURNING``, like ``_insert_jobs``: ``seq`` is AUTOINCREMENT too."""
        written, last = self._insert_last(c, "events", EVENT_COLUMNS, event_rows(events, now), EVENT_CONFLICT)
        if written == len(events):
            return {incoming.event.id: seq for seq, incoming in zip(range(last - written + 1, last + 1), events,
                                                                    strict=True)}
        return dict(c.execute("SELECT id, seq FROM events ORDER BY seq DESC LIMIT ?", (written,)).fetchall())

    def _insert_jobs(self, c: Connection, jobs: Sequence[NewJob], seqs: Mapping[str, int], now: float) -> list[Job]:
        """Without ``RETURNING``, which steps (and trades the GIL) once per row. In a transaction of
        the one writer, AUTOINCREMENT hands out ids above every id before it, one after another in
        VALUES order: when every row went in, they have the ids up to the last one written, and
        when some existed already (a batch read again), the new ones are the newest in the table."""
        if not jobs:
            return []
        written, last = self._insert_last(c, "jobs", JOB_COLUMNS, job_rows(jobs, seqs, now), JOB_CONFLICT)
        if written != len(jobs):
            return pending_jobs(c.execute(
                f"SELECT {JOB_RETURNED} FROM jobs ORDER BY id DESC LIMIT ?", (written,)
            ).fetchall())
        return [Job(job_id, job.event_id, job.callback_id, job.ordering_key, b"", now, 0, now, topic=job.topic,
                    partition=job.partition)
                for job_id, job in zip(range(last - written + 1, last + 1), jobs, strict=True)
                if job.held_by is None]

    def _insert_last(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                     tail: str) -> tuple[int, int]:
        """Padded (``ValuesBulk.insert_last``): the events' key (``id``) and the jobs' (``event_seq,
        callback_id``) hold no NULL, so a copy of a row always conflicts with it."""
        return self._bulk.insert_last(cast(sqlite3.Connection, c), table, columns, rows, tail, pad=True)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await self._checkpointer.close()
        if self._write_conn is not None:
            await loop.run_in_executor(self._writer, self._write_conn.close)
            self._write_conn = None
        self._writer.shutdown(wait=True)
        await self._reader.close()
        await self._bulk_reader.close()

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        conn = self._write_conn
        assert conn is not None, "store not started"

        def run() -> T:
            self._checkpointer.restart_if_due(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        return await self._reader.run(fn)

    async def _read_bulk(self, fn: Callable[[Connection], T]) -> T:
        return await self._bulk_reader.run(fn)

    async def _read_rows(self, sql: str, params: Sequence[Any], columns: RowShape) -> list[Sequence[Any]]:
        """All rows as one JSON array that SQLite builds: one step instead of one per row. The driver
        lets go of the GIL for every step and must take it back from a busy event loop, which can
        take a switch interval each: 200 callbacks took 33 to 58 ms to read under load."""
        packed = _packed(sql, columns)

        def run(c: Connection) -> list[Sequence[Any]]:
            return _unpacked(c.execute(packed, params).fetchone()[0], columns)

        return await self._reader.run(run)


class _Reader:
    """A read connection with its own thread (a connection is used by one thread at a time)."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        conn = self._conn
        assert conn is not None, "store not started"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)

    async def close(self) -> None:
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)


class _Checkpointer:
    """Copies committed WAL frames into the database file on its own connection and thread.

    Why: in SQLite's default the commit that crosses the WAL's size limit runs the checkpoint, and
    its copy and fsync were half of all commit time under a batched load (measured on the relay's
    schema, 2,000-event transactions: commit 21 µs per event with it, 10 without). A PASSIVE
    checkpoint here takes no lock writers or readers wait for.

    Copying alone does not bound the file: the WAL starts over only when a write begins with every
    frame copied and no reader on it, which a copy racing a busy writer rarely leaves (it grew to
    460 MB while a backlog drained). A RESTART checkpoint from here did not help: it waits for a
    moment without a writer, and a busy writer never leaves one. So once the WAL has passed
    ``RESTART_PAGES``, the writer itself runs the RESTART between two transactions
    (``restart_if_due``): the few frames left are copied and the readers move on while the next
    write waits."""

    IDLE_S = 0.05  # between checkpoints once the WAL is copied
    FAILED_S = 1.0  # after an error (disk full, I/O): a failed checkpoint loses nothing
    RESTART_PAGES = 4096

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpointer")
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._frames = 0  # the WAL's length at the last copy

    async def start(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        self._task = asyncio.create_task(self._run(), name="sqlite-checkpointer")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                busy, frames, copied = await loop.run_in_executor(self._executor, self._checkpoint)
            except Exception as exc:  # whatever failed, the next turn may not: the WAL relies on it
                log.warning("wal_checkpoint_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.FAILED_S)
                continue
            if busy or copied >= frames:
                await asyncio.sleep(self.IDLE_S)

    def _checkpoint(self) -> tuple[int, int, int]:
        assert self._conn is not None
        busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if not busy:
            self._frames = frames
        return int(busy), int(frames), int(copied)

    def restart_if_due(self, writer: sqlite3.Connection) -> None:
        """On the writer's thread, between transactions: start the WAL over once it has grown past
        ``RESTART_PAGES`` (this waits for readers still on old frames, at most the busy timeout)."""
        if self._frames > self.RESTART_PAGES:
            self._frames = 0
            try:
                writer.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            except sqlite3.Error as exc:  # the write that follows must not fail for it
                log.warning("wal_restart_failed", error=f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)


def _packed(sql: str, columns: RowShape) -> str:
    """``sql`` as one row: a JSON array of arrays. JSON would round a float to 15 digits and cannot
    hold bytes, so floats travel as 17-digit text and bytes (or text stored as bytes) as hex.
    SQLite's 17 digits give back the same double below 1e100 in magnitude, far above the timestamps
    and durations a store holds."""
    values = []
    for name in columns.names:
        column = quoted(name)
        if name in columns.reals:
            column = f"iif({column} IS NULL, NULL, printf('%!.17g', {column}))"
        elif name in columns.blobs:
            column = f"iif({column} IS NULL, NULL, hex({column}))"
        values.append(column)
    return f"SELECT json_group_array(json_array({', '.join(values)})) FROM ({sql})"


def _unpacked(text: str, columns: RowShape) -> list[Sequence[Any]]:
    rows: list[Sequence[Any]] = orjson.loads(text)
    for row in cast(list[list[Any]], rows):
        for i in columns.real_positions:
            if row[i] is not None:
                row[i] = float(row[i])
        for i in columns.blob_positions:
            if row[i] is not None:
                row[i] = bytes.fromhex(row[i])
    return rows


def _migrate(c: sqlite3.Connection) -> None:
    """Pending migrations in one transaction, with foreign keys off: rebuilding a table that another
    references (SQLite's only way to change its keys) drops it first, which a foreign key refuses
    even when the rebuilt table holds every referenced row. ``foreign_key_check`` stands in for the
    checks that were off, before the commit."""
    c.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set before BEGIN
    try:
        c.execute("BEGIN IMMEDIATE")
        try:
            current = c.execute("PRAGMA user_version").fetchone()[0]
            for version, script in enumerate(SQLITE_MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA user_version = {version}")
            broken = c.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise sqlite3.IntegrityError(f"migration left rows without their referenced row: {broken[:5]}")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
    finally:
        c.execute("PRAGMA foreign_keys=ON")
