"""Events: decoding a Kafka record, validating it against ``schemas/``, and giving it an identity.

The decoder is a tolerant reader that is exact about what a store cannot hold:
- ``null`` in an optional field means absent; unknown fields pass through untouched;
- a NUL character, an integer beyond signed 64 bits, invalid UTF-8, a lone surrogate, a
  non-finite number or nesting deeper than ``MAX_DEPTH`` is refused here, with the field named,
  so no such value ever reaches a store (where it would fail a whole batch);
- an event type outside the accepted list is ``unknown_type``.

orjson parses every record; the slower exact parser (stdlib ``json``) runs only for a record
orjson refuses (to name the field) or one with a digit run long enough to be a 64-bit
overflow (orjson silently turns such integers into floats).

Validation has a fast path and a judge. ``_EventShape`` (msgspec, checked in C) accepts only what
the JSON Schema accepts; whatever it does not accept goes to the compiled schema (fastjsonschema),
which decides and names the field. A valid event thus never pays for the generic validator.

The delivered body is the producer's own bytes, with ``eventId`` spliced in when the record has
none; it is encoded again only when the decoder changed the event (a ``null`` it dropped).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import fastjsonschema
import msgspec
import orjson

from relay.ids import base32_lower, base32_tail
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


class Event(msgspec.Struct, frozen=True):
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


class RecordRef(msgspec.Struct, frozen=True):
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


_INT64 = msgspec.Meta(ge=0, le=INT64_MAX)
_DIGITS = msgspec.Meta(pattern=r"^[0-9]{1,20}\Z")


_Text100 = Annotated[str, msgspec.Meta(max_length=100)]
_Text200 = Annotated[str, msgspec.Meta(max_length=200)]
_Text254 = Annotated[str, msgspec.Meta(max_length=254)]
_Text320 = Annotated[str, msgspec.Meta(max_length=320)]
_Text500 = Annotated[str, msgspec.Meta(max_length=500)]
_Text2000 = Annotated[str, msgspec.Meta(max_length=2000)]


class _InfoShape(msgspec.Struct):
    to: _Text320 | None = None
    subscriberKey: _Text254 | None = None
    messageKey: _Text100 | None = None
    status: _Text100 | None = None
    reason: _Text2000 | None = None
    statusCode: str | int | None = None
    bounceCode: Literal["HARD", "SOFT"] | None = None
    bounceMessage: _Text2000 | None = None
    smtpReason: _Text2000 | None = None


class _EventShape(msgspec.Struct):
    """The event schema as a msgspec type, at least as strict (``\\Z`` where the schema says ``$``,
    no float for an integer): what it accepts, the schema accepts. ``tests/unit/test_events.py``
    checks that with generated documents."""

    eventCategoryType: Annotated[str, msgspec.Meta(max_length=200,
                                                   pattern=r"^[A-Za-z][A-Za-z0-9]*\.[A-Za-z][A-Za-z0-9]*\Z")]
    timestampUTC: Annotated[int, _INT64]
    mid: Annotated[int, _INT64] | Annotated[str, _DIGITS]
    eventId: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+\Z")] | None = None
    compositeId: _Text500 | None = None
    composite: dict[str, Any] | None = None
    definitionKey: _Text200 | None = None
    definitionId: _Text200 | None = None
    eid: Annotated[int, _INT64] | Annotated[str, _DIGITS] | None = None
    info: _InfoShape | None = None


def validate_event(data: Any) -> None:
    try:
        msgspec.convert(data, _EventShape)
        return
    except msgspec.ValidationError:
        pass  # not necessarily invalid: the schema judges, and names the field
    try:
        _event_validator()(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidEvent("schema", exc.message) from None


def accepted_event_types(extra: Iterable[str] = ()) -> frozenset[str]:
    return frozenset(KNOWN_EVENT_TYPES) | frozenset(extra)


def event_id_for(data: dict[str, Any], ref: RecordRef, hashed_through: int = -1) -> str:
    """The producer's ``eventId`` if given, else one made from the record's coordinates.

    Coordinates are stable across redelivery of the same record (crash, rebalance, replay)
    and distinct for two records that happen to carry identical bytes. The id is a digest of the
    topic and partition followed by the offset: one partition's ids share their first twelve
    characters and follow its offsets, so the store's unique index takes its inserts in one recent
    stretch (not strictly at the end: base32's digits sort before its letters); a digest of all
    three scattered every insert over it (9 µs per event at 150,000 events, raw SQLite). Offsets up
    to ``hashed_through`` were stored with that digest before and keep it (``hashed_event_ids``)."""
    given = data.get("eventId")
    if isinstance(given, str) and given:
        return given
    if ref.offset <= hashed_through:
        digest = hashlib.blake2b(
            f"{ref.topic}\x00{ref.partition}\x00{ref.offset}".encode(), digest_size=16
        ).digest()
        return "evt_" + base32_lower(digest)
    head, tail = _place(ref.topic, ref.partition)
    return head + base32_tail(tail | (ref.offset & _U64) << 2)


_U64 = (1 << 64) - 1


@lru_cache(maxsize=4096)
def _place(topic: str, partition: int) -> tuple[str, int]:
    """The id's part that depends on the partition alone, worked out once: ``evt_`` and the first
    twelve base32 digits of the partition's 8-byte digest (60 bits), and its last 4 bits, which
    share the thirteenth digit with the offset's first bit. The 26 digits are those of
    ``base32_lower(digest + offset as 8 signed big-endian bytes)``; the offset's 64 bits and the two
    bits of padding make the last 14."""
    digest = hashlib.blake2b(f"{topic}\x00{partition}".encode(), digest_size=8).digest()
    return "evt_" + base32_lower(digest + bytes(8))[:12], (digest[7] & 0xF) << 66


_DEFAULT_TYPES = accepted_event_types()


def decode_event(value: bytes | None, ref: RecordRef, max_bytes: int,
                 accepted: frozenset[str] = _DEFAULT_TYPES, hashed_through: int = -1) -> Event:
    """Turn a record value into an Event, or raise InvalidEvent with the reason. ``hashed_through``:
    see ``event_id_for``."""
    if value is None:
        raise InvalidEvent("empty", "record has no value (tombstone)")
    if len(value) > max_bytes:
        raise InvalidEvent("too_large", f"record is {len(value)} bytes; the limit is {max_bytes}")
    data = _parse(value)
    if not isinstance(data, dict):
        raise InvalidEvent("schema", f"event must be a JSON object, got {_json_type(data)}")
    changed = b"null" in value and _drop_nulls(data)  # one C-speed scan spares the walk
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
    event_id = event_id_for(data, ref, hashed_through)
    if data.get("eventId") != event_id:
        data = {"eventId": event_id, **data}
        if not changed:  # the producer's bytes, with the id spliced in after the opening brace
            brace = value.index(b"{") + 1
            body = b'{"eventId":"' + event_id.encode() + b'",' + value[brace:]
    elif not changed:
        body = value
    info = data.get("info") or {}
    if changed:
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


def _drop_nulls(data: dict[str, Any]) -> bool:
    """``null`` in an optional field means absent (Jackson, protobuf-JSON and friends write it).
    Returns whether anything was dropped."""
    dropped = False
    for name in _OPTIONAL_TOP:
        if name in data and data[name] is None:
            del data[name]
            dropped = True
    info = data.get("info")
    if isinstance(info, dict) and None in info.values():
        for name in _OPTIONAL_INFO:
            if name in info and info[name] is None:
                del info[name]
                dropped = True
    return dropped


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
