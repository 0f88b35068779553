import pytest

from relay.events import (
    KNOWN_EVENT_TYPES,
    SCHEMA_DIR,
    InvalidEvent,
    RecordRef,
    decode_event,
    delivery_validator,
    validate_event,
)
from relay.samples import sample_event

REF = RecordRef("relay.events", 3, 1234)


@pytest.mark.parametrize("path", sorted((SCHEMA_DIR / "examples").glob("*.json")), ids=lambda p: p.name)
def test_example_files_are_valid(path) -> None:
    import orjson

    data = orjson.loads(path.read_bytes())
    if isinstance(data, list):
        delivery_validator()(data)
    else:
        validate_event(data)


@pytest.mark.parametrize("path", sorted((SCHEMA_DIR / "examples" / "invalid").glob("*.json")),
                         ids=lambda p: p.name)
def test_invalid_example_files_are_rejected(path) -> None:
    with pytest.raises(InvalidEvent):
        decode_event(path.read_bytes(), REF, 10_000)


@pytest.mark.parametrize("event_type", KNOWN_EVENT_TYPES)
def test_samples_of_every_type_are_valid(event_type) -> None:
    import orjson

    event = decode_event(orjson.dumps(sample_event(event_type)), REF, 10_000)
    assert event.type == event_type
    delivery_validator()([event.data])


def test_identity_is_stable_for_a_record_and_distinct_across_records() -> None:
    import orjson

    raw = orjson.dumps(sample_event("EmailSent"))
    a = decode_event(raw, REF, 10_000)
    b = decode_event(raw, REF, 10_000)
    c = decode_event(raw, RecordRef("relay.events", 3, 1235), 10_000)
    assert a.id == b.id != c.id
    assert orjson.loads(a.body)["eventId"] == a.id


def test_producer_event_id_wins() -> None:
    import orjson

    raw = orjson.dumps({**sample_event("EmailSent"), "eventId": "order-77:sent"})
    assert decode_event(raw, REF, 10_000).id == "order-77:sent"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"", "malformed_json"),
        (b"{", "malformed_json"),
        (b"[]", "schema"),
        (b'"text"', "schema"),
        (b'{"eventCategoryType": "X.Y", "timestampUTC": -1, "mid": 1}', "schema"),
        (b'{"eventCategoryType": "no-dot", "timestampUTC": 1, "mid": 1}', "schema"),
        (b'{"eventCategoryType": "X.Y", "timestampUTC": 1, "mid": "abc"}', "schema"),
        (b'{"eventCategoryType": "X.Y", "timestampUTC": 1, "mid": 1, "info": {"messageKey": "' + b"k" * 101 + b'"}}',
         "schema"),
        (b" " * 10_001, "too_large"),
    ],
)
def test_bad_records_have_a_reason(raw, reason) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, REF, 10_000)
    assert info.value.reason == reason


def test_unknown_but_well_formed_types_are_accepted() -> None:
    import orjson

    raw = orjson.dumps({"eventCategoryType": "FutureEvents.SomethingNew", "timestampUTC": 1, "mid": 5})
    assert decode_event(raw, REF, 10_000).type == "FutureEvents.SomethingNew"
