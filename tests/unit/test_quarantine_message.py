import base64
import hashlib

from relay.quarantine import PUBLISHED_RAW_BYTES, quarantine_entry, quarantine_message, storable_text


def test_small_records_are_published_whole() -> None:
    q = quarantine_entry("t", 1, 2, "schema", "why", b"{bad", b"k", 5.0)
    message = quarantine_message(q)
    assert base64.b64decode(message["value"]) == b"{bad"
    assert base64.b64decode(message["key"]) == b"k"
    assert "valueTruncated" not in message


def test_large_records_are_cut_with_length_and_hash() -> None:
    raw = bytes(range(256)) * 4000  # ~1 MB, more than the cap
    message = quarantine_message(quarantine_entry("t", 1, 2, "too_large", "big", raw, None, 5.0))
    assert len(base64.b64decode(message["value"])) == PUBLISHED_RAW_BYTES
    assert message["valueTruncated"] is True
    assert message["valueBytes"] == len(raw)
    assert message["valueSha256"] == hashlib.sha256(raw).hexdigest()
    assert message["key"] is None


def test_details_are_storable_whatever_the_producer_wrote() -> None:
    text = storable_text("key y\x00z and \ud800 and " + "x" * 5000)
    assert "\x00" not in text
    text.encode("utf-8")  # no lone surrogate left
    assert len(text) <= 2100
