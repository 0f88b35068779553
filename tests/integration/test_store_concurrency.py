"""The store under the delivery engine's many concurrent requests, on the suite's store (SQLite, or
PostgreSQL in its pass):

- window loads never hold up the other reads (the API's among them): with 200 callbacks filling
  their windows at once, a console request used to wait 1.7 s behind them;
- batch pins that wait for the writer together are written in one transaction, and share its
  outcome;
- on PostgreSQL, ingest's persists do not wait behind the other writes."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from relay.crypto import SecretBox
from relay.events import RecordRef, decode_event
from relay.samples import sample_event
from relay.store.models import IncomingEvent, NewJob
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
    """Holds reads or writes inside the store until opened: a thread event for SQLite (reads run on
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

    def held(self) -> Callable[[Connection], Any]:
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
        loads = [asyncio.create_task(store._read_bulk(gate.held())) for _ in range(8)]
        await asyncio.sleep(0)  # every load is queued for a connection before the reads below
        await asyncio.wait_for(store.ping(), timeout=10)
        assert await asyncio.wait_for(store.list_accounts(), timeout=10) == []
        assert not any(load.done() for load in loads), "the loads were held all along"
        gate.open()
        await asyncio.wait_for(asyncio.gather(*loads), timeout=30)


async def _jobs(store: SqlStore, count: int) -> list[int]:
    events, jobs = [], []
    for n in range(count):
        event = decode_event(orjson.dumps(sample_event("EmailSent", mid="777", subscriber_key=f"s{n}")),
                             RecordRef("pins", 0, n), 1 << 20)
        events.append(IncomingEvent(event, "acct_pins", "pins", 0, n))
        jobs.append(NewJob(event.id, "cb_pins", event.subscriber_key, 0, topic="pins"))
    return sorted(job.id for job in await store.persist_batch(events, jobs, []))


def _count_pin_writes(store: SqlStore) -> list[int]:
    """Counts the store's write transactions that write pins (an instance attribute over the method)."""
    writes = [0]
    write = store._write_pipelined

    async def counted(fn: Callable[[Connection], Any]) -> Any:
        if "assign_batch" in getattr(fn, "__qualname__", ""):
            writes[0] += 1
        return await write(fn)

    store._write_pipelined = counted  # type: ignore[method-assign]
    return writes


async def test_pins_waiting_together_are_written_in_one_transaction(store: SqlStore) -> None:
    job_ids = await _jobs(store, 30)
    writes = _count_pin_writes(store)
    with Gate(pg_helpers.testing_postgres()) as gate:
        busy = asyncio.create_task(store._write(gate.held()))  # the writer is busy with something else
        await asyncio.sleep(0)
        pins = [asyncio.create_task(store.assign_batch(f"msg_{n}", job_ids[n * 3:n * 3 + 3])) for n in range(10)]
        await asyncio.sleep(0)
        assert not any(pin.done() for pin in pins)
        gate.open()
        await asyncio.wait_for(asyncio.gather(busy, *pins), timeout=30)
    assert writes[0] == 1, "the ten pins waited for the writer together: one transaction"
    rows = await store._read(lambda c: c.execute("SELECT id, batch_id FROM jobs ORDER BY id").fetchall())
    assert [tuple(row) for row in rows] == [(job_id, f"msg_{n // 3}") for n, job_id in enumerate(job_ids)]


async def test_a_pin_group_shares_its_outcome(store: SqlStore) -> None:
    job_ids = await _jobs(store, 4)
    with Gate(pg_helpers.testing_postgres()) as gate:
        busy = asyncio.create_task(store._write(gate.held()))
        await asyncio.sleep(0)
        pins = [asyncio.create_task(store.assign_batch("msg_a", job_ids[:1])),
                asyncio.create_task(store.assign_batch("msg_bad", [2**70])),  # no store can hold this id
                asyncio.create_task(store.assign_batch("msg_b", job_ids[1:2]))]
        await asyncio.sleep(0)
        gate.open()
        await busy
        outcomes = await asyncio.gather(*pins, return_exceptions=True)
    assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
    await store.assign_batch("msg_c", job_ids[2:])  # the next group is a new transaction
    rows = await store._read(lambda c: c.execute("SELECT batch_id FROM jobs ORDER BY id").fetchall())
    assert [row[0] for row in rows] == [None, None, "msg_c", "msg_c"], "the failed group wrote nothing"


async def test_ingest_persists_while_another_write_is_held(store: SqlStore) -> None:
    """PostgreSQL gives ingest's persist a connection of its own: it does not queue behind pins,
    results or registry writes (nor they behind it)."""
    if not isinstance(store, PostgresStore):
        pytest.skip("SQLite writes through one connection by design")
    with Gate(postgres=True) as gate:
        busy = asyncio.create_task(store._write(gate.held()))
        await asyncio.sleep(0)
        job_ids = await asyncio.wait_for(_jobs(store, 5), timeout=10)
        assert not busy.done(), "the other write was held all along"
        gate.open()
        await asyncio.wait_for(busy, timeout=30)
    assert len(job_ids) == 5
