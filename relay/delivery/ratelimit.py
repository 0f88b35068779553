"""Per-callback rate limits: token buckets, pure and clock-free (the caller passes ``now``).

Across instances the limit is shared by partition ownership: an instance that owns k of the n
input partitions enforces k/n of the callback's limit, so the shares add up to the whole limit
whatever the number of instances, with no coordination on the hot path. Traffic skewed onto few
partitions gets less than the limit (never more).
"""

from __future__ import annotations

from dataclasses import dataclass


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst`` (one second's worth, at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._tokens = self.burst
        self._updated: float | None = None

    def _refill(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now if self._updated is None else max(self._updated, now)

    def wait(self, n: float, now: float) -> float:
        """Seconds until ``n`` tokens are there (a request larger than the burst needs a full bucket)."""
        self._refill(now)
        need = min(n, self.burst)
        return 0.0 if self._tokens >= need else (need - self._tokens) / self.rate

    def take(self, n: float, now: float) -> None:
        self._refill(now)
        self._tokens -= min(n, self.burst)


@dataclass(frozen=True)
class RateLimit:
    """A callback's configured limit (None: unlimited), as events and as requests per second."""

    events_per_second: float | None = None
    requests_per_second: float | None = None


class Limiter:
    """The buckets of one lane, rebuilt when the limit or this instance's share of it changes."""

    def __init__(self) -> None:
        self._key: tuple[RateLimit, float] | None = None
        self._events: TokenBucket | None = None
        self._requests: TokenBucket | None = None

    def configure(self, limit: RateLimit, share: float) -> None:
        if self._key == (limit, share):
            return
        self._key = (limit, share)
        share = max(share, 1e-6)
        self._events = None if limit.events_per_second is None else TokenBucket(limit.events_per_second * share)
        self._requests = (None if limit.requests_per_second is None
                          else TokenBucket(limit.requests_per_second * share))

    @property
    def max_batch(self) -> int | None:
        """Events per POST the event bucket can ever allow at once."""
        return None if self._events is None else max(1, int(self._events.burst))

    def wait(self, events: int, now: float) -> float:
        return max(0.0 if self._events is None else self._events.wait(events, now),
                   0.0 if self._requests is None else self._requests.wait(1, now))

    def take(self, events: int, now: float) -> None:
        if self._events is not None:
            self._events.take(events, now)
        if self._requests is not None:
            self._requests.take(1, now)
