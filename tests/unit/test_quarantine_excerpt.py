"""A safe excerpt of a quarantined record's bytes: control characters spelled out, bad UTF-8 replaced."""

from __future__ import annotations

from relay.api.quarantine import excerpt
from relay.quarantine import claimed_mid


def test_control_characters_are_spelled_out_and_bad_utf8_replaced() -> None:
    assert excerpt(b'{"a":"x\x00y\x1b[31m"}') == '{"a":"x\\x00y\\x1b[31m"}'
    assert excerpt(b"\xff\xfeok") == "\ufffd\ufffdok"
    assert excerpt(None) is None


def test_a_long_record_is_cut_and_says_so() -> None:
    cut = excerpt(b"a" * 1000, limit=10)
    assert cut == "a" * 10 + "…"


def test_the_mid_a_refused_record_names() -> None:
    assert claimed_mid(b'{"mid": 514009876, "eventCategoryType": "Nope"}') == "514009876"
    assert claimed_mid(b'{"mid": "42"}') == "42"
    for value in (None, b"", b"{not json", b"[1]", b'{"mid": true}', b'{"mid": {"x": 1}}'):
        assert claimed_mid(value) is None, value
