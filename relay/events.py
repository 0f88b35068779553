"""Events: decoding a Kafka record, validating it against ``schemas/``, and giving it an identity.

Validation uses a compiled validator (fastjsonschema): a generic interpreter per record would
cost more than everything else on the hot path together.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

KNOWN_EVENT_TYPES: tuple[str, ...] = (
    "TransactionalSendEvents.EmailSent",
    "TransactionalSendEvents.EmailNotSent",
    "TransactionalSendEvents.EmailBounced",
    "TransactionalSendEvents.SmsSent",
    "TransactionalSendEvents.SmsNotSent",
    "TransactionalSendEvents.SmsTransient",
    "TransactionalSendEvents.SmsDelivered",
    "TransactionalSendEvents.SmsBounced",
    "EngagementEvents.EmailOpen",
    "EngagementEvents.EmailClick",
    "EngagementEvents.EmailUnsubscribe",
)


class InvalidEvent(ValueError):
    """A record that cannot become an event; ``reason`` is short and stable, ``detail`` explains."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event. ``body`` is the event as delivered (with ``eventId``), already encoded."""

    id: str
    type: str
    mid: str
    timestamp_ms: int
    subscriber_key: str | None
    message_key: str | None
    data: dict[str, Any]
    body: bytes

    @property
    def info(self) -> dict[str, Any]:
        info = self.data.get("info")
        return info if isinstance(info, dict) else {}


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where a record came from; part of its identity and of every quarantine entry."""

    topic: str
    partition: int
    offset: int


def load_schema(name: str) -> dict[str, Any]:
    return orjson.loads((SCHEMA_DIR / name).read_bytes())


@cache
def _event_validator() -> Any:
    return fastjsonschema.compile(load_schema("event.schema.json"))


@cache
def delivery_validator() -> Any:
    """Validator of a delivery body; the test suite and `relay receiver` use it."""
    event_schema = load_schema("event.schema.json")
    return fastjsonschema.compile(
        load_schema("delivery.schema.json"),
        handlers={"https": lambda uri: event_schema},
    )


def validate_event(data: Any) -> None:
    try:
        _event_validator()(data)
    except fastjsonschema.JsonSchemaException as exc:
        raise InvalidEvent("schema", exc.message) from None


def event_id_for(data: dict[str, Any], ref: RecordRef) -> str:
    """The producer's ``eventId`` if given, else a hash of the record's coordinates.

    Coordinates are stable across redelivery of the same record (crash, rebalance, replay)
    and distinct for two records that happen to carry identical bytes.
    """
    given = data.get("eventId")
    if isinstance(given, str) and given:
        return given
    digest = hashlib.blake2b(
        f"{ref.topic}\x00{ref.partition}\x00{ref.offset}".encode(), digest_size=16
    ).digest()
    return "evt_" + base64.b32encode(digest).decode().rstrip("=").lower()


def decode_event(value: bytes | None, ref: RecordRef, max_bytes: int) -> Event:
    """Turn a record value into an Event, or raise InvalidEvent with the reason."""
    if value is None:
        raise InvalidEvent("empty", "record has no value (tombstone)")
    if len(value) > max_bytes:
        raise InvalidEvent("too_large", f"record is {len(value)} bytes; the limit is {max_bytes}")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("malformed_json", str(exc)) from None
    if not isinstance(data, dict):
        raise InvalidEvent("schema", f"event must be a JSON object, got {type(data).__name__}")
    validate_event(data)
    event_id = event_id_for(data, ref)
    if data.get("eventId") != event_id:
        data = {"eventId": event_id, **data}
    info = data.get("info") or {}
    return Event(
        id=event_id,
        type=data["eventCategoryType"],
        mid=str(data["mid"]),
        timestamp_ms=data["timestampUTC"],
        subscriber_key=_opt_str(info.get("subscriberKey")),
        message_key=_opt_str(info.get("messageKey")),
        data=data,
        body=orjson.dumps(data),
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
