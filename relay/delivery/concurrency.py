"""How many POSTs a callback gets at once: found from its answers, not fixed (AIMD).

A fixed limit is wrong both ways: too low for a fast endpoint (a 2 ms receiver with 8 in flight
caps single-event delivery at a fraction of what it can take) and too high for a struggling one
(every extra request in flight is one more timeout and a global slot held). So the limit moves:

- it grows by one after a full window of answers (``limit`` of them) that were all good and came
  back no slower than twice the fastest recent latency — the endpoint kept up, try one more;
- it halves on a sign of overload: a timeout or connection failure, a 429, or a 5xx;
- it stays between 1 and the ceiling (the callback's ``maxInFlight``, else
  ``RELAY_LANE_MAX_IN_FLIGHT``); the global cap bounds all lanes together.

Other 4xx answers say nothing about capacity and leave the limit alone. Pure logic: the lane
reports each answer; the clock is not needed.
"""

from __future__ import annotations

# The fastest latency decays towards recent ones, so a faster past does not pin it forever.
_BASELINE_DECAY = 0.01
_SLOW_FACTOR = 2.0
_SLOW_GRACE_MS = 5.0


class AdaptiveLimit:
    def __init__(self, ceiling: int, initial: int = 8) -> None:
        self._ceiling = max(1, ceiling)
        self._limit = float(min(initial, self._ceiling))
        self._baseline_ms: float | None = None
        self._good_in_window = 0

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def ceiling(self) -> int:
        return self._ceiling

    def bound(self, ceiling: int) -> None:
        """The callback's settings changed: a new ceiling applies at once."""
        self._ceiling = max(1, ceiling)
        self._limit = min(self._limit, self._ceiling)

    def answered(self, status: int | None, latency_ms: float) -> None:
        """One POST's answer: ``status`` None for a timeout or a connection failure."""
        if status is None or status == 429 or status >= 500:
            self._limit = max(1.0, self._limit / 2)
            self._good_in_window = 0
            return
        if not 200 <= status < 300:
            return
        baseline = self._baseline_ms
        if baseline is None or latency_ms < baseline:
            self._baseline_ms = latency_ms
        else:
            self._baseline_ms = baseline + (latency_ms - baseline) * _BASELINE_DECAY
        if latency_ms > (self._baseline_ms or 0.0) * _SLOW_FACTOR + _SLOW_GRACE_MS:
            self._good_in_window = 0  # queueing at the endpoint: hold here
            return
        self._good_in_window += 1
        if self._good_in_window >= self.limit and self._limit < self._ceiling:
            self._limit += 1
            self._good_in_window = 0
