"""Events: decoding a Kafka record, validating it against ``schemas/``, and giving it an identity.

The decoder is a tolerant reader that is exact about what a store cannot hold:
- ``null`` in an optional field means absent; unknown fields pass through untouched;
- a NUL character, an integer beyond signed 64 bits, invalid UTF-8, a lone surrogate, a
  non-finite number or nesting deeper than ``MAX_DEPTH`` is refused here, with the field named,
  so no such value ever reaches a store (where it would fail a whole batch);
- an event type outside the accepted list is ``unknown_type``.

orjson parses every record; the slower exact parser (stdlib ``json``) runs only for a record
orjson refuses (to name the field) or one with a digit run long enough to be a 64-bit
overflow (orjson silently turns such integers into floats). Validation uses a compiled
validator (fastjsonschema): a generic interpreter per record would cost more than everything
else on the hot path together.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from relay.jsonwalk import INT64_MAX, out_of_int64, walk_json

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

MAX_DEPTH = 100
# One C-speed pass over the record finds what needs a closer look: it maps every digit to "9" and
# every opening bracket to "[". A run of 19 digits may be an integer beyond 64 bits (orjson would
# hand it over as a float); more than MAX_DEPTH brackets may be too deep. (The regex \d{19} took
# ~4 µs a record, restarting at every digit; this takes ~0.6 µs.)
_SHAPE = bytes(0x39 if 0x30 <= b <= 0x39 else 0x5B if b in (0x5B, 0x7B) else 0x20 for b in range(256))
_LONG_DIGIT_RUN = b"9" * 19
_OPTIONAL_TOP = ("eventId", "compositeId", "composite", "definitionKey", "definitionId", "eid", "info")
_OPTIONAL_INFO = ("to", "subscriberKey", "messageKey", "status", "reason", "statusCode", "bounceCode",
                  "bounceMessage", "smtpReason")


def load_schema(name: str) -> dict[str, Any]:
    return orjson.loads((SCHEMA_DIR / name).read_bytes())


# The one list of accepted event types lives in the event schema; RELAY_EXTRA_EVENT_TYPES adds more.
KNOWN_EVENT_TYPES: tuple[str, ...] = tuple(
    load_schema("event.schema.json")["definitions"]["knownEventType"]["enum"]
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
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidEvent("schema", exc.message) from None


def accepted_event_types(extra: Iterable[str] = ()) -> frozenset[str]:
    return frozenset(KNOWN_EVENT_TYPES) | frozenset(extra)


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


_DEFAULT_TYPES = accepted_event_types()


def decode_event(value: bytes | None, ref: RecordRef, max_bytes: int,
                 accepted: frozenset[str] = _DEFAULT_TYPES) -> Event:
    """Turn a record value into an Event, or raise InvalidEvent with the reason."""
    if value is None:
        raise InvalidEvent("empty", "record has no value (tombstone)")
    if len(value) > max_bytes:
        raise InvalidEvent("too_large", f"record is {len(value)} bytes; the limit is {max_bytes}")
    data = _parse(value)
    if not isinstance(data, dict):
        raise InvalidEvent("schema", f"event must be a JSON object, got {_json_type(data)}")
    _drop_nulls(data)
    validate_event(data)
    event_type = data["eventCategoryType"]
    if event_type not in accepted:
        raise InvalidEvent("unknown_type", f"eventCategoryType: {event_type!r} is not an accepted event type "
                                           "(add it to RELAY_EXTRA_EVENT_TYPES to accept it)")
    timestamp = data["timestampUTC"]
    if isinstance(timestamp, float):  # 5.0 is an integer to JSON Schema; keep it exact from here on
        if timestamp > INT64_MAX:
            raise InvalidEvent("integer_out_of_range", "timestampUTC: beyond the signed 64-bit range")
        timestamp = int(timestamp)
    event_id = event_id_for(data, ref)
    if data.get("eventId") != event_id:
        data = {"eventId": event_id, **data}
    info = data.get("info") or {}
    try:
        body = orjson.dumps(data)
    except orjson.JSONEncodeError as exc:  # cannot happen below MAX_DEPTH; never stall on it
        raise InvalidEvent("too_deep", f"cannot be encoded again: {exc}") from None
    return Event(
        id=event_id,
        type=event_type,
        mid=str(data["mid"]),
        timestamp_ms=timestamp,
        subscriber_key=info.get("subscriberKey"),
        message_key=info.get("messageKey"),
        data=data,
        body=body,
    )


def _parse(value: bytes) -> Any:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _diagnose(value, str(exc)) from None
    shape = value.translate(_SHAPE)
    long_digits = _LONG_DIGIT_RUN in shape
    if long_digits:
        data = _exact_parse(value)
    if long_digits or b"\\u0000" in value:
        _refuse_unstorable(data)
    if shape.count(b"[") > MAX_DEPTH:
        _check_depth(data)
    return data


def _exact_parse(value: bytes) -> Any:
    try:
        return json.loads(value)
    except RecursionError:
        raise InvalidEvent("too_deep", f"nested deeper than {MAX_DEPTH} levels") from None


def _diagnose(value: bytes, orjson_message: str) -> InvalidEvent:
    """orjson refused the record: find what and where, for a reason an operator can act on."""
    try:
        value.decode("utf-8")
        valid_utf8 = True
    except UnicodeDecodeError:
        valid_utf8 = False
    try:
        data = json.loads(value.decode("utf-8", "surrogateescape"))
    except RecursionError:
        return InvalidEvent("too_deep", f"nested deeper than {MAX_DEPTH} levels")
    except ValueError:
        if "depth limit" in orjson_message:
            return InvalidEvent("too_deep", f"nested deeper than {MAX_DEPTH} levels")
        return InvalidEvent("malformed_json", orjson_message)
    for path, item in walk_json(data):
        if isinstance(item, str) and any("\ud800" <= ch <= "\udfff" for ch in item):
            if not valid_utf8:
                return InvalidEvent("invalid_utf8", f"{path}: not valid UTF-8")
            return InvalidEvent("lone_surrogate", f"{path}: an escaped UTF-16 surrogate without its pair")
        if isinstance(item, float) and not math.isfinite(item):
            return InvalidEvent("number_out_of_range", f"{path}: NaN, Infinity or beyond double range")
    if not valid_utf8:
        return InvalidEvent("invalid_utf8", "not valid UTF-8")
    return InvalidEvent("malformed_json", orjson_message)


def _refuse_unstorable(data: Any) -> None:
    for path, item in walk_json(data):
        if isinstance(item, str) and "\x00" in item:
            raise InvalidEvent("nul_character", f"{path}: contains U+0000")
        if out_of_int64(item):
            raise InvalidEvent("integer_out_of_range", f"{path}: beyond the signed 64-bit range")


def _check_depth(data: Any) -> None:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidEvent("too_deep", f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _drop_nulls(data: dict[str, Any]) -> None:
    """``null`` in an optional field means absent (Jackson, protobuf-JSON and friends write it)."""
    for name in _OPTIONAL_TOP:
        if name in data and data[name] is None:
            del data[name]
    info = data.get("info")
    if isinstance(info, dict) and None in info.values():
        for name in _OPTIONAL_INFO:
            if name in info and info[name] is None:
                del info[name]


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
