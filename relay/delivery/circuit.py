"""A circuit breaker per callback: stop hammering an endpoint that keeps failing.

closed ──(threshold consecutive failures)──► open ──(cooldown elapsed)──► half-open
  ▲       (and most recent attempts failed)    ▲                              │ one probe at a time
  └────────────── probe succeeds ──────────────┴──────── probe fails ◄────────┘ (cooldown doubles)

While open, jobs wait without spending attempts. A run of failures opens the circuit only when
most of the last ``RECENT`` attempts failed too: an endpoint that fails sporadically (a 30 %
error rate produces runs of 5 now and then) keeps being served, each job retried on its own
schedule, instead of being cut off for a cooldown again and again. The breaker also remembers since when the
endpoint has failed without a single success, which decides when a callback is disabled.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]
RECENT = 20
OPEN_FAILURE_SHARE = 0.5


@dataclass(frozen=True)
class CircuitConfig:
    failure_threshold: int = 5
    cooldown: float = 5.0
    cooldown_max: float = 300.0
    disable_after: float = 5 * 86400.0


class CircuitBreaker:
    def __init__(self, config: CircuitConfig, failing_since: float | None = None) -> None:
        self.config = config
        self.state: State = "closed"
        self.consecutive_failures = 0
        self.failing_since = failing_since
        self._opened_at = 0.0
        self._cooldown = config.cooldown
        self._probe_in_flight = False
        self._recent: deque[bool] = deque(maxlen=RECENT)  # True: the attempt failed

    def allows(self, now: float) -> bool:
        """May a batch be sent now? In half-open state only one probe at a time."""
        if self.state == "closed":
            return True
        if self.state == "open" and now - self._opened_at >= self._cooldown:
            self.state = "half_open"
        if self.state == "half_open" and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def release_probe(self) -> None:
        """The probe permission was taken but nothing was sent."""
        if self.state == "half_open":
            self._probe_in_flight = False

    def reopens_at(self) -> float | None:
        return self._opened_at + self._cooldown if self.state == "open" else None

    def record_success(self) -> bool:
        """Returns True when this success closed an open circuit."""
        was_open = self.state != "closed"
        self._recent.append(False)
        self.state = "closed"
        self.consecutive_failures = 0
        self.failing_since = None
        self._cooldown = self.config.cooldown
        self._probe_in_flight = False
        return was_open

    def record_failure(self, now: float) -> bool:
        """Returns True when this failure opened the circuit."""
        self.consecutive_failures += 1
        self._recent.append(True)
        if self.failing_since is None:
            self.failing_since = now
        if self.state == "half_open":
            self._probe_in_flight = False
            self._cooldown = min(self._cooldown * 2, self.config.cooldown_max)
            self._open(now)
            return False
        if (self.state == "closed" and self.consecutive_failures >= self.config.failure_threshold
                and sum(self._recent) >= OPEN_FAILURE_SHARE * len(self._recent)):
            self._open(now)
            return True
        return False

    def should_disable(self, now: float) -> bool:
        return self.failing_since is not None and now - self.failing_since >= self.config.disable_after

    def _open(self, now: float) -> None:
        self.state = "open"
        self._opened_at = now
