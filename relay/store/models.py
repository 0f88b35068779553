"""Records the store keeps. Plain frozen dataclasses: the store decides how they are laid out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from relay.delivery.ratelimit import RateLimit

if TYPE_CHECKING:
    from relay.events import Event

OrderingKey = Literal["subscriberKey", "messageKey", "none"]


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    mid: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An account's API key. Only its hash is stored; ``prefix`` lets people tell keys apart."""

    id: str
    account_id: str
    key_hash: str
    prefix: str
    name: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class SigningSecret:
    """One HMAC secret of a callback. ``expires_at`` is set on the old secret during a rotation."""

    secret: str
    created_at: float
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """Per-callback overrides of the global delivery settings (None: use the global one)."""

    timeout: float | None = None
    retry_schedule: tuple[float, ...] | None = None
    retry_max_age: float | None = None
    max_in_flight: int | None = None
    rate_events: float | None = None
    rate_requests: float | None = None
    transformation: str | None = None  # a JMESPath expression applied to each event
    format: str = "ens"  # or "cloudevents"

    def stored(self) -> dict[str, Any]:
        """The stored form (its keys are kept for rows already written; the API shapes its own)."""
        return {
            "timeout": self.timeout,
            "retrySchedule": list(self.retry_schedule) if self.retry_schedule else None,
            "retryMaxAge": self.retry_max_age,
            "maxInFlight": self.max_in_flight,
            "rateEvents": self.rate_events,
            "rateRequests": self.rate_requests,
            "transformation": self.transformation,
            "format": self.format,
        }

    @property
    def rate_limit(self) -> RateLimit:
        return RateLimit(self.rate_events, self.rate_requests)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> DeliveryOptions:
        schedule = data.get("retrySchedule")
        return cls(data.get("timeout"), tuple(schedule) if schedule else None,
                   data.get("retryMaxAge"), data.get("maxInFlight"), data.get("rateEvents"),
                   data.get("rateRequests"), data.get("transformation"), data.get("format") or "ens")


@dataclass(frozen=True, slots=True)
class OAuth2Client:
    """OAuth 2.0 client credentials: Relay fetches a token and sends it as ``Authorization: Bearer``."""

    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    audience: str | None = None


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """mTLS: a client certificate and key (PEM), and optionally the CA bundle the endpoint's
    certificate is checked against instead of the system's."""

    certificate: str
    key: str
    ca: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointAuth:
    """How Relay authenticates to an endpoint. Sealed at rest as a whole: headers may carry tokens."""

    headers: tuple[tuple[str, str], ...] = ()
    oauth2: OAuth2Client | None = None
    mtls: ClientCertificate | None = None

    @property
    def configured(self) -> bool:
        return bool(self.headers) or self.oauth2 is not None or self.mtls is not None

    def stored(self) -> dict[str, Any]:
        o, m = self.oauth2, self.mtls
        return {
            "headers": [list(h) for h in self.headers],
            "oauth2": None if o is None else {"tokenUrl": o.token_url, "clientId": o.client_id,
                                              "clientSecret": o.client_secret, "scope": o.scope,
                                              "audience": o.audience},
            "mtls": None if m is None else {"certificate": m.certificate, "key": m.key, "ca": m.ca},
        }

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> EndpointAuth:
        o, m = data.get("oauth2"), data.get("mtls")
        return cls(
            headers=tuple((str(n), str(v)) for n, v in data.get("headers") or ()),
            oauth2=None if o is None else OAuth2Client(o["tokenUrl"], o["clientId"], o["clientSecret"],
                                                       o.get("scope"), o.get("audience")),
            mtls=None if m is None else ClientCertificate(m["certificate"], m["key"], m.get("ca")),
        )


@dataclass(frozen=True, slots=True)
class Callback:
    id: str
    account_id: str
    name: str
    url: str
    max_batch_size: int
    secrets: tuple[SigningSecret, ...]
    verified: bool
    enabled: bool = True
    disabled_reason: str | None = None
    ens_signature: bool = False
    created_at: float = 0.0
    options: DeliveryOptions = field(default_factory=lambda: DeliveryOptions())
    failing_since: float | None = None
    throttled_until: float | None = None  # a 429's Retry-After: no sends before, on any instance
    auth: EndpointAuth = field(default_factory=EndpointAuth)
    version: int = 1  # grows with every change of settings, secrets or enabled state (the ETag)

    def active_secrets(self, now: float) -> list[SigningSecret]:
        return [s for s in self.secrets if s.expires_at is None or s.expires_at > now]


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    account_id: str
    name: str
    callback_id: str
    event_types: tuple[str, ...]
    filters: tuple[str, ...] = ()
    status: Literal["active", "paused"] = "active"
    status_reason: str | None = None
    ordering: OrderingKey = "subscriberKey"
    created_at: float = 0.0
    on_pause: Literal["drop", "hold"] = "drop"


class NewJob(msgspec.Struct, frozen=True):
    """A delivery job as routing creates it, before the store gives it an id."""

    event_id: str
    callback_id: str
    ordering_key: str | None
    partition: int
    held_by: str | None = None
    topic: str = ""


@dataclass(slots=True)
class Job:
    """A pending delivery of one event to one callback. ``id`` orders jobs within a callback."""

    id: int
    event_id: str
    callback_id: str
    ordering_key: str | None
    body: bytes
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    batch_id: str | None = None
    event_timestamp_ms: int = 0
    topic: str = ""
    partition: int = -1
    traceparent: str | None = None  # the producer's W3C trace context, if its record carried one

    @property
    def source(self) -> tuple[str, int]:
        """The Kafka partition the event came from: the instance owning it owns this job."""
        return self.topic, self.partition


class IncomingEvent(msgspec.Struct, frozen=True):
    """A decoded event on its way into the store: whose it is and which Kafka record it came from."""

    event: Event
    account_id: str
    topic: str
    partition: int
    offset: int
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class QuarantinedRecord:
    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    raw: bytes | None
    key: bytes | None
    at: float
    id: int | None = None
    published_at: float | None = None
    account_id: str | None = None  # when the record's JSON names a known MID


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One POST: its outcome applies to every job in the batch it carried."""

    batch_id: str
    callback_id: str
    job_ids: tuple[int, ...]
    at: float
    status: int | None
    latency_ms: float
    error: str | None
    response_excerpt: str | None


Outcome = Literal["delivered", "retry", "dead"]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What the dispatcher decided after an attempt, for the store to write in a group."""

    attempt: AttemptRecord
    outcome: Outcome
    next_attempt_at: float = 0.0
    reason: str | None = None
    jobs: tuple[Job, ...] = field(default=())
    # The batch's first answer, for a batch pinned as one row (pins.py): the store deletes the pin,
    # as its jobs now hold their batch id. Not for a job a transformation refused (no POST carried
    # it; the rest of its batch is still on its way under the pin), nor for a batch never pinned.
    ends_pin: bool = False


OperationState = Literal["queued", "running", "paused", "done", "failed", "cancelled"]
FINISHED_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Operation:
    """Background work that must survive a restart and be visible to every instance (a bulk replay,
    an ownership handshake, a delayed sweep). One instance runs it at a time, under a lease."""

    id: str
    account_id: str
    kind: str
    params: dict[str, Any]
    state: OperationState
    created_at: float
    updated_at: float
    not_before: float = 0.0
    done: int = 0
    total: int | None = None
    error: str | None = None
    finished_at: float | None = None
    cursor: str | None = None
    """Where the next step starts (kind-specific, e.g. the last job id sent)."""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES
