"""The lane's in-memory window against a real SQLite store: no job may be stranded in the store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import orjson

from relay.crypto import SecretBox
from relay.delivery.http import DeliveryClient, UrlPolicy
from relay.delivery.lane import Lane, LaneConfig
from relay.delivery.retry import RetryPolicy
from relay.events import RecordRef, decode_event
from relay.samples import sample_event
from relay.store.models import Job, NewJob
from relay.store.sqlite import SqliteStore


class SlowReadStore(SqliteStore):
    """Reads pending jobs, then waits for ``release`` before answering: a read that is slow to return."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, SecretBox(os.urandom(32)))
        self.release = asyncio.Event()
        self.reading = asyncio.Event()

    async def load_pending(self, callback_id: str, after_id: int, limit: int,
                           partitions: Sequence[tuple[str, int]] | None = None) -> list[Job]:
        jobs = await super().load_pending(callback_id, after_id, limit, partitions)
        self.reading.set()
        await self.release.wait()
        return jobs


async def persist(store: SqliteStore, offset: int) -> list[Job]:
    event = decode_event(orjson.dumps(sample_event("EmailSent", mid=7)), RecordRef("t", 0, offset), 1 << 20)
    return await store.persist_batch([(event, "acc", "t", 0, offset)], [NewJob(event.id, "cb", "k", 0)], [])


async def test_jobs_offered_while_a_load_runs_are_read_again(tmp_path: Path) -> None:
    store = SlowReadStore(tmp_path / "relay.db")
    await store.start()
    client = DeliveryClient(UrlPolicy())
    try:
        await persist(store, 0)
        lane = Lane("cb", callback=lambda _id: None, store=store, client=client,
                    policy=RetryPolicy((0.0,), 60.0), config=LaneConfig(window=100),
                    global_slots=asyncio.Semaphore(1), report=lambda *_: None, notify=lambda *_: None)
        load = asyncio.create_task(lane._load())
        await store.reading.wait()
        # Persisted and offered after the read's snapshot, before its answer came back.
        lane.offer(await persist(store, 1))
        store.release.set()
        await load
        assert lane.depth == 1
        await lane._load()
        assert lane.depth == 2, "the job offered during the first read was stranded in the store"
    finally:
        await client.close()
        await store.close()


def test_a_batch_never_spans_source_partitions() -> None:
    """A batch keeps its webhook-id when its partition moves to another instance only if all of it moves."""
    owned = {("t", 0), ("t", 1)}
    lane = Lane("cb", callback=lambda _id: None, store=None, client=None,  # type: ignore[arg-type]
                policy=RetryPolicy((0.0,), 60.0), config=LaneConfig(window=100),
                global_slots=asyncio.Semaphore(1), report=lambda *_: None, notify=lambda *_: None,
                owned=lambda: owned)
    jobs = [Job(i, f"e{i}", "cb", f"k{i}", b"{}", 0.0, topic="t", partition=i % 2) for i in range(1, 11)]
    lane._backlog = False
    lane.offer(jobs)
    batch, _ = lane._next_batch(100, now=1.0)
    assert [j.id for j in batch] == [1, 3, 5, 7, 9]
    owned.discard(("t", 0))
    lane._begin(batch)
    assert lane._next_batch(100, now=1.0)[0] == [], "jobs of a partition no longer owned are not sent"
