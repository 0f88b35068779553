"""The circuit breaker: a dead endpoint is cut off quickly, a flaky one is not."""

from __future__ import annotations

from relay.delivery.circuit import CircuitBreaker, CircuitConfig


def test_a_dead_endpoint_opens_the_circuit_after_the_threshold() -> None:
    breaker = CircuitBreaker(CircuitConfig(failure_threshold=5, cooldown=2.0))
    assert [breaker.record_failure(now=1.0) for _ in range(5)] == [False] * 4 + [True]
    assert breaker.state == "open" and not breaker.allows(2.0)
    assert breaker.allows(3.0) and not breaker.allows(3.0), "one probe at a time"
    assert breaker.record_success() and breaker.state == "closed"


def test_a_run_of_failures_amid_successes_does_not_open_it() -> None:
    breaker = CircuitBreaker(CircuitConfig(failure_threshold=5))
    for _ in range(20):
        breaker.record_success()
    assert not any(breaker.record_failure(now=1.0) for _ in range(9)), "9 of the last 20 failed"
    assert breaker.record_failure(now=1.0), "10 of the last 20 failed: most attempts fail now"


def test_a_failed_probe_doubles_the_cooldown_up_to_the_maximum() -> None:
    breaker = CircuitBreaker(CircuitConfig(failure_threshold=1, cooldown=1.0, cooldown_max=3.0))
    breaker.record_failure(now=0.0)
    for opened_at, reopens in ((1.0, 3.0), (3.0, 6.0), (6.0, 9.0)):
        assert breaker.allows(opened_at)
        breaker.record_failure(now=opened_at)
        assert breaker.reopens_at() == reopens
