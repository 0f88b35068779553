import pytest

from relay.events import (
    KNOWN_EVENT_TYPES,
    MAX_DEPTH,
    SCHEMA_DIR,
    InvalidEvent,
    RecordRef,
    accepted_event_types,
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
def test_invalid_example_files_are_refused_with_the_reason_their_name_gives(path) -> None:
    expected_reason = path.name.split("--")[0]
    with pytest.raises(InvalidEvent) as info:
        decode_event(path.read_bytes(), REF, 10_000)
    assert info.value.reason == expected_reason, info.value


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


def _id_bytes(event_id: str) -> bytes:
    import base64

    return base64.b32decode(event_id.removeprefix("evt_").upper() + "======")


def test_ids_of_one_partition_follow_its_offsets_and_partitions_do_not_share_them() -> None:
    """The digest of topic and partition, then the offset: one partition's ids take the store's
    unique index near its end (see ``event_id_for``)."""
    from relay.events import event_id_for

    ids = [event_id_for({}, RecordRef("relay.events", 3, offset)) for offset in (0, 1, 1234, 2**62)]
    assert [int.from_bytes(_id_bytes(i)[8:], "big") for i in ids] == [0, 1, 1234, 2**62]
    assert len({_id_bytes(i)[:8] for i in ids}) == 1
    others = {_id_bytes(event_id_for({}, RecordRef(topic, partition, 0)))[:8]
              for topic, partition in [("relay.events", 3), ("relay.events", 4), ("other", 3), ("relay.events3", 0)]}
    assert len(others) == 4


def test_offsets_stored_before_ordered_ids_keep_their_hashed_id() -> None:
    import hashlib

    from relay.events import event_id_for

    hashed = "evt_" + base64.b32encode(hashlib.blake2b(b"relay.events\x003\x001234", digest_size=16).digest()
                                       ).decode().rstrip("=").lower()
    assert event_id_for({}, REF, hashed_through=1234) == hashed
    assert event_id_for({}, REF, hashed_through=1233) != hashed
    assert decode_event(orjson.dumps(sample_event("EmailSent")), REF, 10_000, hashed_through=5000).id == hashed


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


def test_unknown_types_are_refused_unless_configured() -> None:
    import orjson

    raw = orjson.dumps({"eventCategoryType": "FutureEvents.SomethingNew", "timestampUTC": 1, "mid": 5})
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, REF, 10_000)
    assert info.value.reason == "unknown_type"
    accepted = accepted_event_types(["FutureEvents.SomethingNew"])
    assert decode_event(raw, REF, 10_000, accepted).type == "FutureEvents.SomethingNew"


def _event(**fields) -> dict:
    return {"eventCategoryType": "TransactionalSendEvents.EmailBounced", "timestampUTC": 1795400000000,
            "mid": 514009876, **fields}


def test_null_means_absent_and_is_not_forwarded() -> None:
    import orjson

    raw = orjson.dumps(_event(compositeId=None, eid=None, info={"subscriberKey": "s", "reason": None,
                                                                 "bounceCode": None}))
    event = decode_event(raw, REF, 10_000)
    body = orjson.loads(event.body)
    assert "compositeId" not in body and "eid" not in body
    assert body["info"] == {"subscriberKey": "s"}
    delivery_validator()([body])


def test_null_info_and_null_subscriber_key_mean_absent() -> None:
    import orjson

    assert decode_event(orjson.dumps(_event(info=None)), REF, 10_000).subscriber_key is None
    event = decode_event(orjson.dumps(_event(info={"subscriberKey": None, "messageKey": None})), REF, 10_000)
    assert event.subscriber_key is None and event.message_key is None


def test_unknown_fields_pass_through_untouched_nulls_included() -> None:
    import orjson

    extra = {"tenantRegion": "eu", "tags": [None, 1.5, {"deep": [True]}], "nothing": None}
    raw = orjson.dumps(_event(info={"subscriberKey": "s", "custom": None}, **extra))
    body = orjson.loads(decode_event(raw, REF, 10_000).body)
    for name, value in extra.items():
        assert body[name] == value
    assert body["info"] == {"subscriberKey": "s", "custom": None}


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 1, "mid": 1, '
         rb'"info": {"subscriberKey": "a\\u0000b"}}', None, None),  # an escaped backslash, not a NUL
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 1, "mid": 1, '
         rb'"x\\u0000": 1, "y\u0000": 2}', "nul_character", "y"),
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 1, "mid": 1, '
         rb'"list": [1, "\u0000"]}', "nul_character", "list[1]"),
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 9223372036854775807, '
         b'"mid": 1}', None, None),
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 9223372036854775808, '
         b'"mid": 1}', "integer_out_of_range", "timestampUTC"),
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 1, "mid": 1, '
         b'"n": -9223372036854775809}', "integer_out_of_range", "n"),
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 1, "mid": 1, '
         b'"n": -9223372036854775808, "s": "12345678901234567890123"}', None, None),
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 1, "mid": 1, '
         b'"f": 1e400}', "number_out_of_range", "f"),
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 1.0, "mid": 1}', None, None),
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 1.5, "mid": 1}',
         "schema", "timestampUTC"),
        (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": true, "mid": 1}',
         "schema", "timestampUTC"),
    ],
)
def test_exact_decoding(raw, reason, field) -> None:
    if reason is None:
        event = decode_event(raw, REF, 10_000)
        assert isinstance(event.timestamp_ms, int)
        return
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, REF, 10_000)
    assert info.value.reason == reason
    assert field in info.value.detail


def test_nesting_up_to_the_limit_is_fine_and_beyond_it_is_too_deep() -> None:
    def nested(depth: int) -> bytes:
        return (b'{"eventCategoryType": "TransactionalSendEvents.EmailSent", "timestampUTC": 1, "mid": 1, '
                b'"c": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}")

    decode_event(nested(MAX_DEPTH), REF, 1 << 20)
    for depth in (MAX_DEPTH + 1, 300, 2000):
        with pytest.raises(InvalidEvent) as info:
            decode_event(nested(depth), REF, 1 << 20)
        assert info.value.reason == "too_deep"


# -- the fast paths of decoding: each must agree with the slow one it replaces ---------------

import base64  # noqa: E402
import hashlib  # noqa: E402

import fastjsonschema  # noqa: E402
import msgspec  # noqa: E402
import orjson  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from relay.events import _event_validator, _EventShape, event_id_for  # noqa: E402
from relay.ids import base32_lower  # noqa: E402


@given(st.binary(min_size=16, max_size=16))
def test_base32_lower_is_base32(digest: bytes) -> None:
    assert base32_lower(digest) == base64.b32encode(digest).decode().rstrip("=").lower()


_SCALARS = st.one_of(st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
            | st.sampled_from([0, 1, 20, 21, 100, 101, 128, 129, 200, 201, 254, 255, 320, 321, 500, 501, 2000,
                               2001]).map(lambda n: "7" * n)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
            | st.sampled_from(["", "777", "0", "12345678901234567890", "123456789012345678901", "777\n",
                               "TransactionalSendEvents.EmailSent", "A.b", "a..b", "HARD", "SOFT", "hard",
                               "abc-1", "a b"]))
_FIELDS = ("eventId", "eventCategoryType", "timestampUTC", "compositeId", "composite", "definitionKey",
           "definitionId", "mid", "eid", "info")
_INFO = ("to", "subscriberKey", "messageKey", "status", "reason", "statusCode", "bounceCode", "bounceMessage",
         "smtpReason")


@st.composite
def _near_events(draw: st.DrawFn) -> dict:
    """A valid event with some fields replaced by values of any kind: around the schema's edges."""
    event = sample_event(draw(st.sampled_from(KNOWN_EVENT_TYPES)).split(".")[1], mid="777")
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
        event[name] = draw(_SCALARS | st.dictionaries(st.sampled_from(_INFO), _SCALARS, max_size=3))
    if isinstance(event.get("info"), dict):
        for name in draw(st.lists(st.sampled_from(_INFO), max_size=3)):
            event["info"][name] = draw(_SCALARS)
    return event


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])  # a cold first draw takes a second
@given(_near_events())
def test_what_the_fast_shape_accepts_the_schema_accepts(event: dict) -> None:
    try:
        msgspec.convert(event, _EventShape)
    except msgspec.ValidationError:
        return
    try:
        _event_validator()(event)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise AssertionError(f"the fast shape accepted what the schema refuses: {exc.message}") from None


def test_the_fast_shape_accepts_the_examples_and_samples() -> None:
    for event_type in KNOWN_EVENT_TYPES:
        msgspec.convert(sample_event(event_type.split(".")[1], mid="777"), _EventShape)


@pytest.mark.parametrize("raw", [
    b'{"eventCategoryType":"TransactionalSendEvents.EmailSent","timestampUTC":1,"mid":7,"x":[1, {"y":"\\u00e9"}]}',
    b'  {"eventId":"given-1","eventCategoryType":"TransactionalSendEvents.EmailSent","timestampUTC":1,"mid":"7"}\n',
    b'{"eventCategoryType":"TransactionalSendEvents.EmailSent","timestampUTC":1.0,"mid":7,"info":{"to":null}}',
])
def test_the_body_is_the_producers_bytes_and_means_what_a_re_encoding_would(raw: bytes) -> None:
    event = decode_event(raw, REF, 1 << 20)
    assert orjson.loads(event.body) == event.data
    assert next(iter(orjson.loads(event.body))) == "eventId"
    if b"null" not in raw and b'"eventId"' in raw:
        assert event.body == raw


@given(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=2**31 - 1),
       st.integers(min_value=0, max_value=2**63 - 1))
def test_an_ordered_id_is_the_partitions_digest_and_the_offset_in_base32(topic: str, partition: int,
                                                                         offset: int) -> None:
    """The per-partition head and the 14-digit tail spell what encoding all 16 bytes would."""
    digest = hashlib.blake2b(f"{topic}\x00{partition}".encode(), digest_size=8).digest()
    whole = "evt_" + base32_lower(digest + offset.to_bytes(8, "big", signed=True))
    assert event_id_for({}, RecordRef(topic, partition, offset)) == whole
