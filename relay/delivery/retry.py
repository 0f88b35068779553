"""When to try a failed delivery again, and when to give up."""

from __future__ import annotations

import random
from dataclasses import dataclass

from relay.delivery.http import HttpOutcome

RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """``schedule[n]`` is the wait after the n-th failed attempt; the last entry repeats.

    ``schedule[0]`` is the wait before the first attempt (normally 0). A job is dead once its
    next attempt would fall later than ``max_age`` after the job was created.
    """

    schedule: tuple[float, ...]
    max_age: float
    retry_after_max: float = 3600.0
    jitter: float = 0.2

    def next_attempt_at(
        self, failed_attempts: int, created_at: float, now: float, outcome: HttpOutcome,
        rng: random.Random | None = None,
    ) -> float | None:
        """The time of the next attempt, or None when the job should become a dead letter."""
        index = min(failed_attempts, len(self.schedule) - 1)
        delay = self.schedule[index]
        if self.jitter and delay:
            delay *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        if outcome.status in RETRY_AFTER_STATUSES and outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, self.retry_after_max))
        when = now + delay
        if when - created_at > self.max_age:
            return None
        return when
