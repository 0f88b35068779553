"""Token buckets and instance shares of a callback's rate limit, on an injected clock."""

from __future__ import annotations

from relay.delivery.ratelimit import Limiter, RateLimit, TokenBucket


def sent_in(limiter: Limiter, seconds: float, batch: int, step: float = 0.001) -> int:
    """Events a lane would send in ``seconds`` of simulated time, polling every ``step``."""
    now, sent = 0.0, 0
    while now < seconds:
        if limiter.wait(batch, now) == 0:
            limiter.take(batch, now)
            sent += batch
        now += step
    return sent


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(10)
    assert bucket.wait(10, now=0.0) == 0
    bucket.take(10, now=0.0)
    assert bucket.wait(1, now=0.0) == 0.1
    assert bucket.wait(5, now=0.3) == 0.2


def test_a_request_larger_than_the_burst_waits_for_a_full_bucket_not_forever() -> None:
    bucket = TokenBucket(2)
    bucket.take(2, now=0.0)
    assert bucket.wait(50, now=0.0) == 1.0


def test_the_event_rate_holds_over_time() -> None:
    limiter = Limiter()
    limiter.configure(RateLimit(events_per_second=100), share=1.0)
    assert sent_in(limiter, 10.0, batch=10) <= 100 * 10 + 100  # the rate, plus one burst


def test_the_request_rate_holds_whatever_the_batch() -> None:
    limiter = Limiter()
    limiter.configure(RateLimit(requests_per_second=5), share=1.0)
    assert sent_in(limiter, 10.0, batch=1) <= 5 * 10 + 5


def test_shares_of_three_instances_add_up_to_the_limit() -> None:
    shares = [2 / 6, 3 / 6, 1 / 6]
    total = 0
    for share in shares:
        limiter = Limiter()
        limiter.configure(RateLimit(events_per_second=60), share)
        total += sent_in(limiter, 20.0, batch=1)
    assert 0.9 * 60 * 20 <= total <= 60 * 20 + 60


def test_the_batch_cap_is_what_one_bucket_can_ever_hold() -> None:
    limiter = Limiter()
    limiter.configure(RateLimit(events_per_second=30), share=0.5)
    assert limiter.max_batch == 15
    limiter.configure(RateLimit(), share=0.5)
    assert limiter.max_batch is None
