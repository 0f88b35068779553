"""Batch pins on the suite's store (SQLite, or PostgreSQL in its pass): a batch's composition,
pinned before its first POST, comes back with its jobs after a crash or a rebalance until the
batch's first result, and only to jobs never attempted."""

from __future__ import annotations

import time

from relay.store.models import AttemptRecord, DeliveryResult
from relay.store.sql import SqlStore
from tests.helpers.stores import persist_jobs

CALLBACK = "cb_pins"


def _result(batch_id: str, job_ids: list[int], outcome: str = "retry", ends_pin: bool = True) -> DeliveryResult:
    """An answer to a pinned batch's first POST, or (``ends_pin`` False) a job its transformation refused."""
    now = time.time()
    attempt = AttemptRecord(batch_id, CALLBACK, tuple(job_ids), now, 503 if ends_pin else None, 1.0, None, None)
    reason = None if outcome == "retry" else "refused by the transformation"
    return DeliveryResult(attempt, outcome, next_attempt_at=now, reason=reason, ends_pin=ends_pin)  # type: ignore[arg-type]


async def _batch_ids(store: SqlStore) -> dict[int, str | None]:
    return {job.id: job.batch_id for job in await store.load_pending(CALLBACK, 0, 100)}


async def _pins(store: SqlStore) -> list[str]:
    return [row[0] for row in await store._read(
        lambda c: c.execute("SELECT batch_id FROM batch_pins ORDER BY batch_id").fetchall())]


async def test_a_pin_comes_back_with_its_jobs_until_the_batch_is_answered(store: SqlStore) -> None:
    ids = await persist_jobs(store, 5)
    await store.assign_batch("msg_a", CALLBACK, ids[:3])
    assert await _batch_ids(store) == {ids[0]: "msg_a", ids[1]: "msg_a", ids[2]: "msg_a", ids[3]: None, ids[4]: None}

    await store.record_results([_result("msg_a", ids[:3])])
    assert await _pins(store) == [], "the first result ends the pin"
    loaded = await store.load_pending(CALLBACK, 0, 100)
    assert [(job.id, job.batch_id, job.attempts) for job in loaded[:3]] == [(i, "msg_a", 1) for i in ids[:3]], \
        "the jobs' own rows hold the batch id from then on"


async def test_a_refused_job_leaves_the_pin_to_the_rest_of_its_batch(store: SqlStore) -> None:
    ids = await persist_jobs(store, 3)
    await store.assign_batch("msg_b", CALLBACK, ids)
    await store.record_results([_result("msg_b", ids[:1], "dead", ends_pin=False)])
    assert await _pins(store) == ["msg_b"]
    assert await _batch_ids(store) == {ids[1]: "msg_b", ids[2]: "msg_b"}


async def test_only_jobs_never_attempted_take_a_pin_and_a_later_pin_wins(store: SqlStore) -> None:
    ids = await persist_jobs(store, 5)
    await store.record_results([_result("msg_answered", ids[3:4])])
    await store.assign_batch("msg_old", CALLBACK, ids[0:2])
    # A pin whose write was reported failed may have been written all the same; the batch composed
    # again is pinned under another id, later.
    await store.assign_batch("msg_new", CALLBACK, ids[1:3])
    await store.assign_batch("msg_stale", CALLBACK, ids[3:5])
    assert await _batch_ids(store) == {ids[0]: "msg_old", ids[1]: "msg_new", ids[2]: "msg_new",
                                       ids[3]: "msg_answered", ids[4]: "msg_stale"}


async def test_pinning_the_same_composition_again_is_harmless(store: SqlStore) -> None:
    ids = await persist_jobs(store, 2)
    await store.assign_batch("msg_same", CALLBACK, ids)
    await store.assign_batch("msg_same", CALLBACK, ids)
    assert await _pins(store) == ["msg_same"]
    assert await _batch_ids(store) == {ids[0]: "msg_same", ids[1]: "msg_same"}


async def test_a_load_past_the_pinned_jobs_reads_no_pin(store: SqlStore) -> None:
    ids = await persist_jobs(store, 4)
    await store.assign_batch("msg_c", CALLBACK, ids[:2])
    later = await store.load_pending(CALLBACK, ids[1], 100)
    assert [(job.id, job.batch_id) for job in later] == [(ids[2], None), (ids[3], None)]


async def test_retention_removes_pins_that_no_result_ended(store: SqlStore) -> None:
    ids = await persist_jobs(store, 2)
    await store.assign_batch("msg_d", CALLBACK, ids)
    await store.record_results([_result("msg_d", ids, "dead", ends_pin=False)])
    await store.purge_older_than(0.0, time.time() - 3600, 0.0)
    assert await _pins(store) == ["msg_d"], "younger than the attempts' retention: kept"
    await store.purge_older_than(0.0, time.time() + 1, 0.0)
    assert await _pins(store) == []

