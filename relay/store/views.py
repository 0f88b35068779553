"""What the read-side queries return: typed rows for the operations API, dashboard and CLI. The
store fills them; the API layer decides how they look in JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


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


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    """An event as it was routed to a callback (any state): what a recovery sends again."""

    job_id: int
    event_id: str
    body: bytes


class EventCount(NamedTuple):
    type: str
    bucket_ms: int
    events: int
