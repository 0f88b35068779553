"""The lane's window through its public methods only: order, batching and the store read-back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=40),
    plan=st.lists(st.tuples(st.integers(1, 5), st.sampled_from(["delivered", "retry", "hold", None]),
                            st.booleans()), max_size=60),
)
def test_any_sequence_of_sends_keeps_key_order_and_loses_nothing(
        keys: list[str | None], plan: list[tuple[int, str | None, bool]]) -> None:
    """Batches start and end in any interleaving, each delivered, retried or held: no job starts
    while an earlier job of its key is unfinished and not ahead of it in the same batch, batches
    are in id order, and every job is delivered once in the end."""
    window = filled(*(job(i, key, partition=i % 2) for i, key in enumerate(keys, start=1)))
    key_of = dict(enumerate(keys, start=1))
    delivered: list[int] = []
    in_flight: list[list[Job]] = []
    now = 0.0

    def start(size: int) -> None:
        batch, _ = window.next_batch(size, now)
        if not batch:
            return
        assert ids(batch) == sorted(ids(batch))
        unfinished = {i for i in key_of if i not in delivered}
        for position, started in enumerate(batch):
            earlier = {i for i in unfinished if i < started.id and key_of[i] is not None
                       and key_of[i] == started.ordering_key}
            assert earlier <= set(ids(batch[:position])), f"job {started.id} overtook {earlier}"
        window.begin(batch)
        in_flight.append(batch)

    def finish(outcome: str, settle_first: bool) -> None:
        batch = in_flight.pop(0)
        settle = {
            "delivered": lambda: window.settled(batch, attempts=1),
            "retry": lambda: window.retry_at(batch, now + 1.0, 1, f"msg_{batch[0].id}"),
            "hold": lambda: window.hold(batch, now + 1.0),
        }[outcome]
        if settle_first:
            settle()
            window.end(batch)
        else:
            window.end(batch)
            settle()
        if outcome == "delivered":
            delivered.extend(ids(batch))

    for size, outcome, settle_first in plan:  # outcome None: the oldest send stays in flight for now
        start(size)
        if in_flight and outcome is not None:
            finish(outcome, settle_first)
        now += 0.5
    for _ in range(10 * len(keys) + 10):  # then everything succeeds
        while in_flight:
            finish("delivered", True)
        now += 1.0
        start(5)
        if not in_flight and not len(window):
            break
    assert sorted(delivered) == list(key_of), "every job delivered exactly once"
    assert len(window) == 0
