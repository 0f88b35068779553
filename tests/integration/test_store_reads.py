"""The delivery engine's window loads never hold up the store's other reads (the API's among them):
with 200 callbacks filling their windows at once, a console request used to wait 1.7 s behind them.
Runs on the suite's store (SQLite, or PostgreSQL in its pass)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from relay.crypto import SecretBox
from relay.store.postgres import PostgresStore
from relay.store.sql import Connection, SqlStore
from relay.store.sqlite import SqliteStore
from tests.helpers import postgres as pg_helpers

_LOCK = 7_140_001  # an advisory lock key no store code uses


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    box = SecretBox(os.urandom(32))
    if pg_helpers.testing_postgres():
        opened: SqlStore = PostgresStore(pg_helpers.fresh_store_url(os.environ[pg_helpers.URL_VARIABLE]), box)
    else:
        opened = SqliteStore(tmp_path / "relay.db", box)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


class Gate:
    """Holds window loads inside the store until opened: a thread event for SQLite (reads run on
    threads), an advisory lock held by another session for PostgreSQL (reads run on the loop)."""

    def __init__(self, postgres: bool) -> None:
        self._postgres = postgres
        self._event = threading.Event()
        self._holder: psycopg.Connection[Any] | None = None

    def __enter__(self) -> Gate:
        if self._postgres:
            self._holder = psycopg.connect(os.environ[pg_helpers.URL_VARIABLE], autocommit=True)
            self._holder.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        return self

    def held_read(self) -> Callable[[Connection], Any]:
        if self._postgres:
            return lambda c: c.execute("SELECT pg_advisory_xact_lock_shared(?)", (_LOCK,)).fetchone()
        return lambda c: self._event.wait(30)

    def open(self) -> None:
        self._event.set()
        if self._holder is not None:
            self._holder.close()  # its session lock goes with it
            self._holder = None

    def __exit__(self, *exc: object) -> None:
        self.open()


async def test_other_reads_answer_while_window_loads_wait(store: SqlStore) -> None:
    with Gate(pg_helpers.testing_postgres()) as gate:
        loads = [asyncio.create_task(store._read_bulk(gate.held_read())) for _ in range(8)]
        await asyncio.sleep(0)  # every load is queued for a connection before the reads below
        await asyncio.wait_for(store.ping(), timeout=10)
        assert await asyncio.wait_for(store.list_accounts(), timeout=10) == []
        assert not any(load.done() for load in loads), "the loads were held all along"
        gate.open()
        await asyncio.wait_for(asyncio.gather(*loads), timeout=30)
