"""SQLite's write-ahead log is copied back into the database file beside the writer, not by it.

The writer keeps its own checkpoint only as a backstop at 10,000 pages; below that, what reaches
the database file got there through the store's checkpointer. SQLite by itself checkpoints at
1,000 pages, so the few hundred written here would stay in the WAL until the store closes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson

from relay.crypto import SecretBox
from relay.events import RecordRef, decode_event
from relay.samples import sample_event
from relay.store.models import IncomingEvent, NewJob
from relay.store.sqlite import SqliteStore
from tests.helpers.polling import eventually

_EVENTS = 300
_BODY_PAD = 2000  # bytes of each event's body: the batch is ~150 pages of 4 KiB, far below either limit
# The load: ~25,000 pages of bodies alone, six times the WAL length past which it must start over.
_LOAD_BATCHES, _LOAD_EVENTS, _LOAD_PAD = 100, 40, 25_000


async def _persist(store: SqliteStore, offsets: range, pad: int) -> None:
    """One ingest transaction: an event per offset, each ``pad`` bytes larger than a sample."""
    events, jobs = [], []
    for n in offsets:
        body = sample_event("EmailSent", mid="777", subscriber_key=f"s{n}")
        body["info"]["note"] = "x" * pad
        event = decode_event(orjson.dumps(body), RecordRef("wal", 0, n), 1 << 20)
        events.append(IncomingEvent(event, "acct_wal", "wal", 0, n))
        jobs.append(NewJob(event.id, "cb_wal", event.subscriber_key, 0, topic="wal"))
    await store.persist_batch(events, jobs, [])


async def test_the_checkpointer_copies_the_wal_while_the_store_is_open(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SqliteStore(path, SecretBox(os.urandom(32)))
    await store.start()
    try:
        await _persist(store, range(_EVENTS), _BODY_PAD)
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size > _EVENTS * _BODY_PAD, "the batch went to the WAL first"

        async def database_file_holds_the_batch() -> int:
            size = path.stat().st_size
            return size if size > _EVENTS * _BODY_PAD else 0

        await eventually(database_file_holds_the_batch, timeout=30,
                         what="the database file to grow by the batch while the store is open")
        rows = await store._read(lambda c: c.execute("SELECT COUNT(*) FROM events").fetchone())
        assert rows[0] == _EVENTS
    finally:
        await store.close()


async def test_the_wal_starts_over_under_a_continuous_write_load(tmp_path: Path) -> None:
    """Copies racing a writer that never pauses, with readers always on the WAL, do not let it
    start over by themselves (it grew to 460 MB in a bench run); the writer's RESTART does."""
    path = tmp_path / "relay.db"
    store = SqliteStore(path, SecretBox(os.urandom(32)))
    await store.start()
    pages_written = 0
    reading = True

    async def read_all_along() -> None:
        while reading:
            await store._read(lambda c: c.execute("SELECT COUNT(*) FROM events").fetchone())

    reader = asyncio.create_task(read_all_along())
    try:
        for batch in range(_LOAD_BATCHES):
            await _persist(store, range(batch * _LOAD_EVENTS, (batch + 1) * _LOAD_EVENTS), _LOAD_PAD)
            pages_written += _LOAD_EVENTS * _LOAD_PAD // 4096
        wal_pages = path.with_name(path.name + "-wal").stat().st_size // 4096
        assert wal_pages < pages_written // 2, (
            f"the WAL file holds {wal_pages} pages after {pages_written} written: it never started over")
    finally:
        reading = False
        await reader
        await store.close()
