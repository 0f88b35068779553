"""Telling a stalled ingest from an idle one: pure, clock-injected, so tests drive it directly.

Ingest is *behind* while it holds a batch it has not committed, or while an assigned partition has
records it has not read. A stall is being behind without a commit for ``threshold`` seconds; an
idle relay (nothing to read) never stalls, however long since its last commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Transition = Literal["stalled", "resumed"]


@dataclass
class StallWatch:
    threshold: float
    clock: Callable[[], float]
    last_commit_at: float = 0.0
    behind_since: float | None = None
    stalled_since: float | None = None

    def __post_init__(self) -> None:
        self.last_commit_at = self.clock()

    @property
    def stalled(self) -> bool:
        return self.stalled_since is not None

    def committed(self) -> None:
        self.last_commit_at = self.clock()

    def observe(self, behind: bool) -> Transition | None:
        """Record whether ingest is behind now; return a transition when the state flips."""
        now = self.clock()
        if not behind:
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = now
        waiting_since = max(self.last_commit_at, self.behind_since or now)
        stalled = behind and now - waiting_since >= self.threshold
        if stalled and self.stalled_since is None:
            self.stalled_since = waiting_since
            return "stalled"
        if not stalled and self.stalled_since is not None:
            self.stalled_since = None
            return "resumed"
        return None
