"""The adaptive per-callback limit (AIMD): grows while answers are good and fast, halves on overload."""

from hypothesis import given
from hypothesis import strategies as st

from relay.delivery.concurrency import AdaptiveLimit


def answer_window(limit: AdaptiveLimit, status: int = 200, latency_ms: float = 2.0) -> None:
    for _ in range(limit.limit):
        limit.answered(status, latency_ms)


def test_a_fast_healthy_endpoint_earns_one_more_per_window_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(ceiling=12, initial=8)
    answer_window(limit)
    assert limit.limit == 9
    for _ in range(20):
        answer_window(limit)
    assert limit.limit == 12


def test_overload_halves_the_limit_and_never_below_one() -> None:
    for signal in (None, 429, 500, 503):
        limit = AdaptiveLimit(ceiling=64, initial=8)
        limit.answered(signal, 10_000.0)
        assert limit.limit == 4, signal
        for _ in range(10):
            limit.answered(signal, 10_000.0)
        assert limit.limit == 1, signal


def test_other_client_errors_say_nothing_about_capacity() -> None:
    limit = AdaptiveLimit(ceiling=64, initial=8)
    for _ in range(50):
        limit.answered(400, 2.0)
        limit.answered(404, 2.0)
    assert limit.limit == 8


def test_answers_much_slower_than_the_fastest_hold_the_limit() -> None:
    limit = AdaptiveLimit(ceiling=64, initial=8)
    answer_window(limit, latency_ms=2.0)
    assert limit.limit == 9
    for _ in range(5):
        answer_window(limit, latency_ms=50.0)  # queueing at the endpoint
    assert limit.limit == 9


def test_a_lower_ceiling_applies_at_once() -> None:
    limit = AdaptiveLimit(ceiling=64, initial=8)
    for _ in range(30):
        answer_window(limit)
    assert limit.limit > 8
    limit.bound(3)
    assert limit.limit == 3 and limit.ceiling == 3


@given(st.lists(st.tuples(st.sampled_from([None, 200, 204, 400, 429, 500]),
                          st.floats(min_value=0.0, max_value=60_000.0)), max_size=300),
       st.integers(min_value=1, max_value=256), st.integers(min_value=1, max_value=64))
def test_the_limit_stays_between_one_and_the_ceiling(answers, ceiling, initial) -> None:
    limit = AdaptiveLimit(ceiling=ceiling, initial=initial)
    for status, latency in answers:
        limit.answered(status, latency)
        assert 1 <= limit.limit <= ceiling
