"""PostgreSQL store: the same SQL as SQLite, shared by every relay instance.

psycopg 3's async connections from a pool, on the event loop: no thread per connection and no
blocking call. The shared SQL functions (see ``sql.py``) are synchronous; they run under
``bridge.run_sync`` and each statement awaits the driver. Writes go one at a time per instance
(ingest, results and registry writes keep their order within an instance), reads run beside them
on the pool's other connections. Write transactions run at REPEATABLE READ and are retried on a
serialization failure or deadlock, which gives the read-check-write functions (single-use
verification keys, "in use" checks) the same meaning they have under SQLite's single writer, now
across instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.types.array import ListBinaryDumper
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from relay.crypto import SecretBox
from relay.store.bridge import await_, run_sync
from relay.store.bulk import ArrayBulk, BinaryArray
from relay.store.migrations import POSTGRES_MIGRATIONS
from relay.store.sql import Connection, Cursor, SqlStore

T = TypeVar("T")
_RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)
_WRITE_ATTEMPTS = 8
_MIGRATION_LOCK = 0x72656C6179  # "relay": instances starting together migrate one at a time
_CONNECT_TIMEOUT = 10.0  # waiting for a pooled connection longer than this is an outage


@functools.lru_cache(maxsize=512)
def _dialect(sql: str) -> str:
    """``?`` placeholders become psycopg's ``%s`` (a literal ``%`` must be doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Result:
    """A statement's outcome, read in full: the shared SQL fetches synchronously."""

    __slots__ = ("_next", "_rows", "rowcount")

    def __init__(self, rowcount: int, rows: list[Any]) -> None:
        self.rowcount = rowcount
        self._rows = rows
        self._next = 0

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Any]:
        rows, self._next = self._rows[self._next:], len(self._rows)
        return rows

    def __iter__(self) -> Any:
        return iter(self.fetchall())


async def _read(cursor: psycopg.AsyncCursor[Any]) -> _Result:
    return _Result(cursor.rowcount, await cursor.fetchall() if cursor.description is not None else [])


class _Received:
    """A pipelined statement's outcome, received when first asked for: asking syncs the pipeline
    (one round trip for every statement sent so far); not asking leaves it to the commit."""

    __slots__ = ("_cursor", "_pipeline", "_result")

    def __init__(self, cursor: psycopg.AsyncCursor[Any], pipeline: psycopg.AsyncPipeline) -> None:
        self._cursor = cursor
        self._pipeline = pipeline
        self._result: _Result | None = None

    @property
    def rowcount(self) -> int:
        return self._received().rowcount

    def fetchone(self) -> Any:
        return self._received().fetchone()

    def fetchall(self) -> list[Any]:
        return self._received().fetchall()

    def __iter__(self) -> Any:
        return iter(self.fetchall())

    def _received(self) -> _Result:
        if self._result is None:
            self._result = await_(self._receive())
        return self._result

    async def _receive(self) -> _Result:
        await self._pipeline.sync()
        return await _read(self._cursor)


class _Adapter:
    """The sqlite3-style slice of DB-API that the shared SQL uses, over an async psycopg
    connection; only valid under ``run_sync``. With a ``pipeline``, statements are sent without
    waiting for their answers (see ``_Received``)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], pipeline: psycopg.AsyncPipeline | None = None) -> None:
        self._conn = conn
        self._pipeline = pipeline

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self._pipeline is not None:
            return _Received(await_(self._conn.execute(_dialect(sql), params)), self._pipeline)
        return await_(self._execute(_dialect(sql), params))

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        rows = list(params)
        if rows:
            await_(self._executemany(_dialect(sql), rows))

    async def _execute(self, sql: str, params: Sequence[Any]) -> _Result:
        return await _read(await self._conn.execute(sql, params))

    async def _executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        async with self._conn.cursor() as cursor:
            await cursor.executemany(sql, rows)


class PostgresStore(SqlStore):
    # DataError: NUL in text, a number out of range, a bad encoding (class 22).
    REJECTED_ERRORS = (psycopg.DataError, psycopg.IntegrityError, UnicodeEncodeError, OverflowError)
    CONSTRAINT_ERRORS = (psycopg.IntegrityError,)
    # Connection lost or refused, server shutting down or starting, disk full, lock timeout, and no
    # connection from the pool in time (the server is out of reach).
    UNAVAILABLE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)

    def __init__(self, url: str, box: SecretBox, readers: int = 4) -> None:
        super().__init__(box, ArrayBulk())
        self._pool = AsyncConnectionPool(
            url, min_size=1, max_size=readers + 2, open=False, timeout=_CONNECT_TIMEOUT,
            kwargs={"autocommit": True, "application_name": "relay"}, configure=_configure)
        self._writing = asyncio.Lock()  # one write transaction at a time, in arrival order
        # Ingest's persists take turns among themselves, beside the other writes (see _write_ingest).
        self._ingesting = asyncio.Lock()
        # Window loads take at most readers - 1 connections: one is always left for the other reads.
        self._bulk_reads = asyncio.Semaphore(max(1, readers - 1))

    async def start(self) -> None:
        await self._pool.open()
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                               "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
            row = await (await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")).fetchone()
            current = row[0] if row else 0
            for version, script in enumerate(POSTGRES_MIGRATIONS, start=1):
                if version > current:
                    await conn.execute(script.encode())
                    await conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                                       (version, time.time()))

    async def close(self) -> None:
        await self._pool.close()

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        return await self._transaction(fn, pipelined=False)

    async def _write_ingest(self, fn: Callable[[Connection], T]) -> T:
        """Ingest's persist on a connection of its own, while pins and results commit on another.

        One writer held its lock ~93 % of a batched drain (persist 103 ms per 2,000 events, a pin
        group 39 ms, a result group 47 ms), mostly waiting for the server: pins and results waited
        behind persists they have nothing to do with. A persist only adds rows (and skips those that
        exist) while pins and results update rows persisted earlier, so neither waits on the
        other's row locks; several instances run exactly this mix already."""
        return await self._transaction(fn, pipelined=False, lock=self._ingesting)

    async def _write_pipelined(self, fn: Callable[[Connection], T]) -> T:
        """Every statement of the transaction, BEGIN and COMMIT among them, sent without waiting
        for the one before: each wait is a trip through a busy event loop, and a batch pin (BEGIN,
        UPDATE, COMMIT) waited for three. Errors surface when a result is read, or at the commit;
        a transaction that failed that way runs again without the pipeline (see ``_transaction``)."""
        return await self._transaction(fn, pipelined=True)

    async def _transaction(self, fn: Callable[[Connection], T], pipelined: bool,
                           lock: asyncio.Lock | None = None) -> T:
        async with lock or self._writing:
            for attempt in range(_WRITE_ATTEMPTS):
                try:
                    async with self._pool.connection() as conn:
                        try:
                            async with conn.pipeline() if pipelined else contextlib.nullcontext() as pipeline:
                                await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                                result = await run_sync(fn, _Adapter(conn, pipeline))
                                await conn.execute("COMMIT")
                        except BaseException:
                            await _rollback(conn)
                            raise
                        return result
                except errors.PipelineAborted:
                    # A statement failed and a later one went out before its error came back: that
                    # one's error says only "aborted" (an OperationalError, which reads as an outage).
                    # Sent one by one, the failing statement raises its own error, so a refused
                    # record is told apart from an outage and isolated.
                    if attempt == _WRITE_ATTEMPTS - 1:
                        raise
                    pipelined = False
                except _RETRYABLE:
                    if attempt == _WRITE_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
            raise AssertionError("unreachable")

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        async with self._pool.connection() as conn:
            return await run_sync(fn, _Adapter(conn))

    async def _read_bulk(self, fn: Callable[[Connection], T]) -> T:
        async with self._bulk_reads:
            return await self._read(fn)


def configure_adapters(adapters: psycopg.adapt.AdaptersMap) -> None:
    """Bulk columns (``BinaryArray``) travel as binary arrays, whatever the placeholder asks."""
    adapters.register_dumper(BinaryArray, ListBinaryDumper)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    configure_adapters(conn.adapters)


async def _rollback(conn: psycopg.AsyncConnection[Any]) -> None:
    """Best effort: a broken connection is discarded by the pool, not rolled back."""
    if not conn.broken and not conn.closed:
        with contextlib.suppress(psycopg.Error):
            await conn.execute("ROLLBACK")
