"""SQLite's write-ahead log is copied back into the database file beside the writer, not by it.

The writer keeps its own checkpoint only as a backstop at 10,000 pages; below that, what reaches
the database file got there through the store's checkpointer. SQLite by itself checkpoints at
1,000 pages, so the few hundred written here would stay in the WAL until the store closes."""

from __future__ import annotations

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


async def test_the_checkpointer_copies_the_wal_while_the_store_is_open(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SqliteStore(path, SecretBox(os.urandom(32)))
    await store.start()
    try:
        events, jobs = [], []
        for n in range(_EVENTS):
            body = sample_event("EmailSent", mid="777", subscriber_key=f"s{n}")
            body["info"]["note"] = "x" * _BODY_PAD
            event = decode_event(orjson.dumps(body), RecordRef("wal", 0, n), 1 << 20)
            events.append(IncomingEvent(event, "acct_wal", "wal", 0, n))
            jobs.append(NewJob(event.id, "cb_wal", event.subscriber_key, 0, topic="wal"))
        await store.persist_batch(events, jobs, [])
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
