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
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from relay.store.postgres import PostgresStore
from relay.store.sql import Connection, SqlStore
from tests.helpers import postgres as pg_helpers
from tests.helpers.stores import persist_jobs

_LOCK = 7_140_001  # an advisory lock key no store code uses


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
    job_ids = await persist_jobs(store, 30)
    writes = _count_pin_writes(store)
    with Gate(pg_helpers.testing_postgres()) as gate:
        busy = asyncio.create_task(store._write(gate.held()))  # the writer is busy with something else
        await asyncio.sleep(0)
        pins = [asyncio.create_task(store.assign_batch(f"msg_{n}", "cb_pins", job_ids[n * 3:n * 3 + 3]))
                for n in range(10)]
        await asyncio.sleep(0)
        assert not any(pin.done() for pin in pins)
        gate.open()
        await asyncio.wait_for(asyncio.gather(busy, *pins), timeout=30)
    assert writes[0] == 1, "the ten pins waited for the writer together: one transaction"
    loaded = await store.load_pending("cb_pins", 0, 100)
    assert [(job.id, job.batch_id) for job in loaded] == [(job_id, f"msg_{n // 3}") for n, job_id in enumerate(job_ids)]


async def test_a_pin_group_shares_its_outcome(store: SqlStore) -> None:
    job_ids = await persist_jobs(store, 4)
    with Gate(pg_helpers.testing_postgres()) as gate:
        busy = asyncio.create_task(store._write(gate.held()))
        await asyncio.sleep(0)
        pins = [asyncio.create_task(store.assign_batch("msg_a", "cb_pins", job_ids[:1])),
                asyncio.create_task(store.assign_batch("msg_bad", "cb_pins", [2**70])),  # no store can hold this id
                asyncio.create_task(store.assign_batch("msg_b", "cb_pins", job_ids[1:2]))]
        await asyncio.sleep(0)
        gate.open()
        await busy
        outcomes = await asyncio.gather(*pins, return_exceptions=True)
    assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
    await store.assign_batch("msg_c", "cb_pins", job_ids[2:])  # the next group is a new transaction
    loaded = await store.load_pending("cb_pins", 0, 100)
    assert [job.batch_id for job in loaded] == [None, None, "msg_c", "msg_c"], "the failed group wrote nothing"


async def test_ingest_persists_while_another_write_is_held(store: SqlStore) -> None:
    """PostgreSQL gives ingest's persist a connection of its own: it does not queue behind pins,
    results or registry writes (nor they behind it)."""
    if not isinstance(store, PostgresStore):
        pytest.skip("SQLite writes through one connection by design")
    with Gate(postgres=True) as gate:
        busy = asyncio.create_task(store._write(gate.held()))
        await asyncio.sleep(0)
        job_ids = await asyncio.wait_for(persist_jobs(store, 5), timeout=10)
        assert not busy.done(), "the other write was held all along"
        gate.open()
        await asyncio.wait_for(busy, timeout=30)
    assert len(job_ids) == 5
