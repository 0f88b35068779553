"""What the read-side queries return: typed rows for the operations API, dashboard and CLI. The
store fills them; the API layer decides how they look in JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One POST to a callback, as the attempt log keeps it."""

    id: int
    batch_id: str
    callback_id: str
    job_count: int
    at: float
    status: int | None
    latency_ms: float
    error: str | None
    response_excerpt: str | None
    outcome: str


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters a list, count, replay or purge means (all given conditions hold)."""

    callback_id: str | None = None
    event_type: str | None = None
    reason: str | None = None  # a case-insensitive part of the reason
    since: float | None = None
    until: float | None = None
    ids: tuple[int, ...] | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)

    def stored(self) -> dict[str, object]:
        """For a durable operation's parameters."""
        return {name: list(v) if isinstance(v := getattr(self, name), tuple) else v for name in self.__slots__}

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> DeadLetterFilter:
        ids = data.get("ids")
        return cls(data.get("callback_id"), data.get("event_type"), data.get("reason"), data.get("since"),
                   data.get("until"), None if ids is None else tuple(ids))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    job_id: int
    batch_id: str
    callback_id: str
    reason: str
    created_at: float
    event_id: str
    attempts: int
    event_type: str
    subscriber_key: str | None
    message_key: str | None


@dataclass(frozen=True, slots=True)
class DeadLetterDetail:
    letter: DeadLetter
    event_body: bytes
    attempts: list[AttemptRow]


@dataclass(frozen=True, slots=True)
class CallbackHealth:
    """The attempt figures cover the window asked for; backlog and dead letters are current."""

    attempts: int
    delivered: int
    average_latency_ms: float | None
    pending: int
    oldest_pending_created_at: float | None
    dead_letters: int
    last_failure: AttemptRow | None
    next_retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class JobState:
    """Where one event stands with one callback."""

    callback_id: str
    state: str
    attempts: int
    finished_at: float | None
    batch_id: str | None


@dataclass(frozen=True, slots=True)
class MessageEvent:
    event_id: str
    type: str
    timestamp_ms: int
    body: bytes
    deliveries: tuple[JobState, ...]
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    """An event as it was routed to a callback (any state): what a recovery sends again."""

    job_id: int
    event_id: str
    body: bytes


class AttemptCount(NamedTuple):
    """Webhook POSTs (and the events they carried) with one outcome in one time bucket."""

    outcome: str
    bucket_ms: int
    requests: int
    events: int


class AttemptBucket(NamedTuple):
    """One callback's POSTs with one outcome in one time bucket, and their mean latency."""

    bucket_ms: int
    outcome: str
    requests: int
    average_latency_ms: float


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A health transition of a callback: ``callback.circuit_opened``, ``…_closed``, ``…disabled``."""

    at: float
    kind: str
    detail: str


class EventCount(NamedTuple):
    type: str
    bucket_ms: int
    events: int
