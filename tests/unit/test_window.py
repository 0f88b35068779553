"""The lane's window through its public methods only: order, batching and the store read-back."""

from __future__ import annotations

from relay.delivery.window import Window
from relay.store.models import Job


def job(i: int, key: str | None = None, partition: int = 0, *, due: float = 0.0) -> Job:
    return Job(i, f"e{i}", "cb", key, b"{}", 0.0, next_attempt_at=due, topic="t", partition=partition)


def filled(*jobs: Job, capacity: int = 100) -> Window:
    """A window that has read the store to its end and then been offered ``jobs``."""
    window = Window(capacity)
    window.begin_load()
    window.loaded([], asked=capacity)
    window.offer(jobs)
    return window


def ids(batch: list[Job]) -> list[int]:
    return [j.id for j in batch]


def test_a_key_in_flight_holds_back_its_later_jobs_and_nothing_else() -> None:
    window = filled(job(1, "a"), job(2, "a"), job(3, "b"))
    first, _ = window.next_batch(1, now=0.0)
    window.begin(first)
    second, _ = window.next_batch(10, now=0.0)
    assert ids(first) == [1]
    assert ids(second) == [3], "job 2 shares key a with job 1 in flight"
    window.begin(second)
    window.end(first)
    window.settled(first, attempts=1)
    assert ids(window.next_batch(10, now=0.0)[0]) == [2]


def test_a_retry_waiting_blocks_its_key_and_says_when_it_is_due() -> None:
    window = filled(job(1, "a", due=50.0), job(2, "a"), job(3, None))
    batch, due = window.next_batch(10, now=10.0)
    assert ids(batch) == [3]
    assert due == 50.0
    assert ids(window.next_batch(10, now=50.0)[0]) == [1, 2, 3]


def test_a_failed_batch_comes_back_whole_and_alone_under_its_id() -> None:
    window = filled(*(job(i, f"k{i}") for i in range(1, 6)))
    batch, _ = window.next_batch(3, now=0.0)
    window.begin(batch)
    window.pin(batch, "msg_1")
    window.end(batch)
    window.retry_at(batch, when=5.0, attempts=1, batch_id="msg_1")
    assert ids(window.next_batch(10, now=1.0)[0]) == [4, 5]
    retried, _ = window.next_batch(10, now=5.0)
    assert ids(retried) == [1, 2, 3]
    assert {j.batch_id for j in retried} == {"msg_1"} and {j.attempts for j in retried} == {1}


def test_a_batch_never_spans_source_partitions() -> None:
    window = filled(*(job(i, f"k{i}", partition=i % 2) for i in range(1, 11)))
    assert ids(window.next_batch(100, now=0.0)[0]) == [1, 3, 5, 7, 9]


def test_jobs_of_a_partition_no_longer_owned_are_not_sent() -> None:
    window = filled(job(1, partition=0), job(2, partition=1))
    assert ids(window.next_batch(10, now=0.0, owned={("t", 1)})[0]) == [2]
    assert window.next_batch(10, now=0.0, owned=set())[0] == []


def test_beyond_capacity_jobs_stay_in_the_store_and_are_read_back() -> None:
    window = filled(*(job(i) for i in range(1, 4)), capacity=2)
    assert len(window) == 2
    assert window.wants_load() is False, "a full window does not read the store"
    batch, _ = window.next_batch(10, now=0.0)
    window.begin(batch)
    window.end(batch)
    window.settled(batch, attempts=1)
    assert window.wants_load()
    window.begin_load()
    window.loaded([job(3)], asked=window.room)
    assert ids(window.next_batch(10, now=0.0)[0]) == [3]
    assert not window.wants_load(), "a short read means the store is drained"


def test_jobs_offered_while_a_read_runs_are_read_again() -> None:
    """The read's snapshot may predate jobs offered (and skipped) while it ran: read once more."""
    window = Window(100)
    window.begin_load()
    window.offer([job(2)])  # skipped: the window is behind the store
    window.loaded([job(1)], asked=100)
    assert window.wants_load(), "job 2 would be stranded in the store"
    window.begin_load()
    window.loaded([job(2)], asked=99)
    assert ids(window.next_batch(10, now=0.0)[0]) == [1, 2]
    assert not window.wants_load()


def test_a_replay_brings_older_jobs_back_in_order() -> None:
    window = filled(job(5), job(6))
    window.reload()
    window.begin_load()
    window.loaded([job(2), job(5), job(6)], asked=98)
    assert ids(window.next_batch(10, now=0.0)[0]) == [2, 5, 6]


def test_forget_keeps_only_what_is_in_flight_and_reads_the_store_again() -> None:
    window = filled(job(1, "a"), job(2, "b"))
    batch, _ = window.next_batch(1, now=0.0)
    window.begin(batch)
    window.forget()
    assert len(window) == 1 and window.batches_in_flight == 1
    assert window.wants_load()
    window.end(batch)
    window.hold(batch, until=9.0)
    assert window.next_batch(10, now=1.0) == ([], 9.0)
