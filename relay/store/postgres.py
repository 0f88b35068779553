"""PostgreSQL store: the same SQL as SQLite, shared by every relay instance.

psycopg 3 connections, each owned by a thread, run the shared SQL functions (see ``sql.py``):
one writer thread (ingest, results and registry writes keep their order within an instance) and
a few reader threads for the API. Write transactions run at REPEATABLE READ and are retried on a
serialization failure or deadlock, which gives the read-check-write functions (single-use
verification keys, "in use" checks) the same meaning they have under SQLite's single writer, now
across instances.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg import errors

from relay.crypto import SecretBox
from relay.store.bulk import ArrayBulk
from relay.store.migrations import POSTGRES_MIGRATIONS
from relay.store.sql import Connection, Cursor, SqlStore

T = TypeVar("T")
_RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)
_WRITE_ATTEMPTS = 8
_MIGRATION_LOCK = 0x72656C6179  # "relay": instances starting together migrate one at a time


@functools.lru_cache(maxsize=512)
def _dialect(sql: str) -> str:
    """``?`` placeholders become psycopg's ``%s`` (a literal ``%`` must be doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Adapter:
    """The sqlite3-style slice of DB-API that the shared SQL uses, over a psycopg connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(_dialect(sql), params)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        rows = list(params)
        if not rows:
            return
        with self._conn.cursor() as cursor:
            cursor.executemany(_dialect(sql), rows)


class PostgresStore(SqlStore):
    # DataError: NUL in text, a number out of range, a bad encoding (class 22).
    REJECTED_ERRORS = (psycopg.DataError, psycopg.IntegrityError, UnicodeEncodeError, OverflowError)
    CONSTRAINT_ERRORS = (psycopg.IntegrityError,)
    # Connection lost or refused, server shutting down or starting, disk full, lock timeout.
    UNAVAILABLE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)

    def __init__(self, url: str, box: SecretBox, readers: int = 4) -> None:
        super().__init__(box, ArrayBulk())
        self._url = url
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pg-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="pg-reader")
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._migrate)

    async def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def _connection(self) -> psycopg.Connection[Any]:
        """This thread's connection, opened again if it broke (the server restarted)."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self._url, autocommit=True, application_name="relay")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _migrate(self) -> None:
        conn = self._connection()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
            current = row[0] if row else 0
            for version, script in enumerate(POSTGRES_MIGRATIONS, start=1):
                if version > current:
                    conn.execute(script.encode())
                    conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                                 (version, time.time()))

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            for attempt in range(_WRITE_ATTEMPTS):
                conn = self._connection()
                try:
                    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                    result = fn(_Adapter(conn))
                    conn.execute("COMMIT")
                    return result
                except _RETRYABLE:
                    _rollback(conn)
                    if attempt == _WRITE_ATTEMPTS - 1:
                        raise
                    time.sleep(random.uniform(0, 0.005 * 2**attempt))
                except BaseException:
                    _rollback(conn)
                    raise
            raise AssertionError("unreachable")

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, lambda: fn(_Adapter(self._connection())))


def _rollback(conn: psycopg.Connection[Any]) -> None:
    if not conn.broken and not conn.closed:
        conn.execute("ROLLBACK")
