import random

from relay.delivery.http import HttpOutcome
from relay.delivery.retry import RetryPolicy

FAIL = HttpOutcome(500, 1.0)


def test_schedule_is_followed_and_its_last_step_repeats() -> None:
    policy = RetryPolicy((0, 5, 30), max_age=1000, jitter=0)
    assert policy.next_attempt_at(1, 0, 100, FAIL) == 105
    assert policy.next_attempt_at(2, 0, 100, FAIL) == 130
    assert policy.next_attempt_at(7, 0, 100, FAIL) == 130


def test_jitter_stays_within_twenty_percent() -> None:
    policy = RetryPolicy((0, 100), max_age=10_000, jitter=0.2)
    rng = random.Random(1)
    delays = [policy.next_attempt_at(1, 0, 0, FAIL, rng) for _ in range(500)]
    assert all(80 <= d <= 120 for d in delays)
    assert max(delays) - min(delays) > 20


def test_job_older_than_max_age_is_dead() -> None:
    policy = RetryPolicy((0, 5), max_age=60, jitter=0)
    assert policy.next_attempt_at(1, created_at=0, now=50, outcome=FAIL) == 55
    assert policy.next_attempt_at(1, created_at=0, now=56, outcome=FAIL) is None


def test_retry_after_is_honoured_and_clamped() -> None:
    policy = RetryPolicy((0, 1), max_age=10_000, retry_after_max=120, jitter=0)
    assert policy.next_attempt_at(1, 0, 0, HttpOutcome(429, 1, retry_after=30)) == 30
    assert policy.next_attempt_at(1, 0, 0, HttpOutcome(503, 1, retry_after=9999)) == 120
    assert policy.next_attempt_at(1, 0, 0, HttpOutcome(500, 1, retry_after=30)) == 1
