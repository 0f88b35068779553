"""Events have an integer key (``seq``) and jobs point at it, on the suite's store (SQLite, or
PostgreSQL in its pass):

- a persist adds jobs only for the events it added, each job pointing at its own event, whatever
  mix of new ids, ids stored before and ids repeated inside the batch it is given (a property);
- a store written before the keys existed migrates with its events, jobs and dead letters, and
  delivers and answers from them afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.crypto import SecretBox
from relay.events import RecordRef, decode_event
from relay.samples import sample_event
from relay.store import postgres as postgres_module
from relay.store import sqlite as sqlite_module
from relay.store.models import IncomingEvent, NewJob
from relay.store.postgres import PostgresStore
from relay.store.sql import SqlStore
from relay.store.sqlite import SqliteStore
from tests.helpers import postgres as pg_helpers


def _fresh_url(tmp_path: Path) -> str:
    """An empty store's location on the suite's store."""
    if pg_helpers.testing_postgres():
        return pg_helpers.fresh_store_url(os.environ[pg_helpers.URL_VARIABLE])
    return str(tmp_path / "relay.db")


def _store_at(url: str, box: SecretBox) -> SqlStore:
    return PostgresStore(url, box) if pg_helpers.testing_postgres() else SqliteStore(url, box)


def _incoming(name: str, offset: int) -> IncomingEvent:
    """An event whose producer named it ``name`` (so two records can carry the same id)."""
    record = {**sample_event("EmailSent", mid="777", subscriber_key=f"sub-{name}"), "eventId": name}
    event = decode_event(orjson.dumps(record), RecordRef("keys", 0, offset), 1 << 20)
    return IncomingEvent(event, "acct_keys", "keys", 0, offset)


def _job(event_id: str, callback_id: str) -> NewJob:
    return NewJob(event_id, callback_id, f"sub-{event_id}", 0, topic="keys")


# -- persist: jobs only for the events a transaction added -------------------------------------
@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def shared_store(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlStore]:
    store = _store_at(_fresh_url(tmp_path_factory.mktemp("keys")), SecretBox(os.urandom(32)))
    loop.run_until_complete(store.start())
    yield store
    loop.run_until_complete(store.close())


_examples = itertools.count()
batches = st.lists(st.lists(st.tuples(st.integers(0, 5), st.sets(st.sampled_from(["cb1", "cb2", "cb3"]))),
                            max_size=8), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches)
def test_a_persist_adds_jobs_only_for_the_events_it_added(
        loop: asyncio.AbstractEventLoop, shared_store: SqlStore, batches: list[list[tuple[int, set[str]]]]) -> None:
    tag = f"x{next(_examples)}-"  # each example its own ids, in tables shared by all examples
    offsets = itertools.count()
    first_routes: dict[str, set[str]] = {}  # what the first record of each id was routed to
    for batch in batches:
        events = [_incoming(f"{tag}{n}", next(offsets)) for n, _ in batch]
        jobs = [_job(incoming.event.id, callback) for incoming, (_, callbacks) in zip(events, batch, strict=True)
                for callback in sorted(callbacks)]
        stored_before = set(first_routes)
        for incoming, (_, callbacks) in zip(events, batch, strict=True):
            first_routes.setdefault(incoming.event.id, set()).update(
                callbacks if incoming.event.id not in stored_before else ())
        added = loop.run_until_complete(shared_store.persist_batch(events, jobs, []))
        expected = {(job.event_id, job.callback_id) for job in jobs if job.event_id not in stored_before}
        assert sorted((job.event_id, job.callback_id) for job in added) == sorted(expected), \
            "a persist returns exactly the jobs of the events it added, once each"
        body_of = {incoming.event.id: incoming.event.body for incoming in reversed(events)}
        assert all(job.body == body_of[job.event_id] for job in added)

    rows = loop.run_until_complete(shared_store._read(lambda c: c.execute(
        "SELECT j.event_id, e.id, j.callback_id FROM jobs j JOIN events e ON e.seq = j.event_seq "
        "WHERE j.event_id LIKE ?", (tag + "%",)).fetchall()))
    assert all(job_event == event for job_event, event, _ in rows), "every job points at its own event's seq"
    assert sorted((event, callback) for event, _, callback in rows) == sorted(
        (event, callback) for event, callbacks in first_routes.items() for callback in callbacks)
    seqs = loop.run_until_complete(shared_store._read(lambda c: c.execute(
        "SELECT id FROM events WHERE id LIKE ? ORDER BY seq", (tag + "%",)).fetchall()))
    assert [row[0] for row in seqs] == list(first_routes), "seq follows the order events were first stored"


# -- a store from before the keys --------------------------------------------------------------
@contextlib.contextmanager
def _before_the_keys() -> Iterator[None]:
    """Stores opened inside stop at the last version without sequential keys."""
    with mock.patch.object(sqlite_module, "SQLITE_MIGRATIONS", sqlite_module.SQLITE_MIGRATIONS[:11]), \
            mock.patch.object(postgres_module, "POSTGRES_MIGRATIONS", postgres_module.POSTGRES_MIGRATIONS[:10]):
        yield


_OLD_ROWS = (
    ("INSERT INTO events (id, account_id, type, mid, timestamp_ms, subscriber_key, message_key, body, topic, "
     'partition, "offset", received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
     [("evt_b", "acct_old", "EmailSent", "777", 2, "sub-1", "msg-1", b'{"eventId":"evt_b"}', "old", 0, 11, 1.0),
      ("evt_a", "acct_old", "EmailSent", "777", 1, "sub-1", "msg-1", b'{"eventId":"evt_a"}', "old", 0, 10, 1.0)]),
    ("INSERT INTO jobs (event_id, callback_id, ordering_key, partition, state, next_attempt_at, created_at, topic) "
     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
     [("evt_a", "cb_one", "sub-1", 0, "pending", 0.0, 1.0, "old"),
      ("evt_b", "cb_one", "sub-1", 0, "pending", 0.0, 1.0, "old"),
      ("evt_a", "cb_two", "sub-1", 0, "dead", 0.0, 1.0, "old")]),
    ("INSERT INTO deadletters (job_id, batch_id, callback_id, reason, created_at) VALUES (?, ?, ?, ?, ?)",
     [(3, "msg_old", "cb_two", "gave up", 1.0)]),
)


async def test_a_store_from_before_the_keys_migrates_and_delivers_from_them(tmp_path: Path) -> None:
    box = SecretBox(os.urandom(32))
    url = _fresh_url(tmp_path)

    def write_old_rows(c: Any) -> None:
        for sql, rows in _OLD_ROWS:
            for row in rows:
                c.execute(sql, row)

    with _before_the_keys():
        old = _store_at(url, box)
        await old.start()
        await old._write(write_old_rows)
        await old.close()

    store = _store_at(url, box)
    await store.start()
    try:
        pending = await store.load_pending("cb_one", 0, 10)
        assert [(job.id, job.event_id, job.body) for job in pending] == [
            (1, "evt_a", b'{"eventId":"evt_a"}'), (2, "evt_b", b'{"eventId":"evt_b"}')], \
            "pending jobs load with their own events' bodies, in job order"
        timeline = await store.message_timeline("acct_old", "messageKey", "msg-1", 10)
        assert [(e.event_id, sorted(j.callback_id for j in e.deliveries)) for e in timeline] == [
            ("evt_a", ["cb_one", "cb_two"]), ("evt_b", ["cb_one"])]
        letters = await store._read(lambda c: c.execute(
            "SELECT d.job_id, j.event_id FROM deadletters d JOIN jobs j ON j.id = d.job_id").fetchall())
        assert [tuple(row) for row in letters] == [(3, "evt_a")]

        again = _incoming("evt_a", 10)
        fresh = _incoming("evt_new", 12)
        added = await store.persist_batch([again, fresh], [_job("evt_a", "cb_three"), _job("evt_new", "cb_one")], [])
        assert [(job.event_id, job.callback_id) for job in added] == [("evt_new", "cb_one")], \
            "an event stored before the migration is still known, and gets no new jobs"
        assert added[0].id > 3, "job ids carry on after the migrated ones"
        seqs = await store._read(lambda c: c.execute("SELECT id FROM events ORDER BY seq").fetchall())
        assert [row[0] for row in seqs][-1] == "evt_new", "new events are keyed after the migrated ones"
        assert await store.hashed_event_ids() == {("old", 0): 11}, \
            "each partition's last offset stored before the migration keeps its hashed id"
    finally:
        await store.close()
