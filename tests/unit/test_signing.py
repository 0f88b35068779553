import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.signing import delivery_headers, ens_signature, new_secret, secret_key, sign_v1, webhook_id
from relay.verify import (
    MalformedHeader,
    MissingHeader,
    NoMatchingSignature,
    TimestampInFuture,
    TimestampTooOld,
    verify,
)

NOW = 1_795_400_000


def test_v1_matches_the_standard_webhooks_definition() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = base64.b64encode(hmac.new(
        base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330." + body, hashlib.sha256,
    ).digest()).decode()
    assert sign_v1(secret_key(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == "v1," + expected


def test_new_secrets_have_the_whsec_form() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(secret_key(secret)) == 32


def test_rotation_header_verifies_with_either_secret() -> None:
    old, new = new_secret(), new_secret()
    headers = delivery_headers([secret_key(new), secret_key(old)], "msg_1", NOW, b"[]")
    assert len(headers["webhook-signature"].split()) == 2
    assert verify(old, headers, b"[]", now=NOW) == "msg_1"
    assert verify(new, headers, b"[]", now=NOW) == "msg_1"
    with pytest.raises(NoMatchingSignature):
        verify(new_secret(), headers, b"[]", now=NOW)


def test_ens_header_is_hmac_of_the_raw_body() -> None:
    secret = new_secret()
    headers = delivery_headers([secret_key(secret)], "msg_1", NOW, b"[1]", ens=True)
    expected = base64.b64encode(hmac.new(secret_key(secret), b"[1]", hashlib.sha256).digest()).decode()
    assert headers["x-sfmc-ens-signature"] == expected == ens_signature(secret_key(secret), b"[1]")


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda h: h.pop("webhook-id"), MissingHeader),
        (lambda h: h.pop("webhook-signature"), MissingHeader),
        (lambda h: h.update({"webhook-timestamp": "soon"}), MalformedHeader),
        (lambda h: h.update({"webhook-timestamp": str(NOW - 301)}), TimestampTooOld),
        (lambda h: h.update({"webhook-timestamp": str(NOW + 301)}), TimestampInFuture),
        (lambda h: h.update({"webhook-signature": "garbage"}), MalformedHeader),
        (lambda h: h.update({"webhook-signature": "v2,abc"}), NoMatchingSignature),
        (lambda h: h.update({"webhook-signature": "v1,!!notbase64"}), NoMatchingSignature),
        (lambda h: h.update({"webhook-id": "msg_other"}), NoMatchingSignature),
    ],
)
def test_verification_failures_are_named(mutate, error) -> None:
    secret = new_secret()
    headers = delivery_headers([secret_key(secret)], "msg_1", NOW, b"[1]")
    mutate(headers)
    with pytest.raises(error):
        verify(secret, headers, b"[1]", now=NOW)


@given(body=st.binary(max_size=2000), msg_id=st.text(min_size=1, max_size=60).filter(lambda s: s.strip() == s),
       secret=st.binary(min_size=24, max_size=64), flip=st.integers(min_value=0))
def test_sign_then_verify_round_trips_and_any_change_fails(body, msg_id, secret, flip) -> None:
    whsec = "whsec_" + base64.b64encode(secret).decode()
    headers = delivery_headers([secret], msg_id, NOW, body)
    assert verify(whsec, headers, body, now=NOW) == msg_id
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ 1]) + body[i + 1:]
        with pytest.raises(NoMatchingSignature):
            verify(whsec, headers, tampered, now=NOW)
    with pytest.raises(NoMatchingSignature):
        verify(whsec, {**headers, "webhook-timestamp": str(NOW + 1)}, body, now=NOW)


def test_webhook_id_is_the_documented_digest() -> None:
    """Ids of batches pinned by an earlier version must still match: the derivation is fixed."""
    digest = hashlib.blake2b(b"cb_1\x00evt_a\x00evt_b", digest_size=16).digest()
    expected = "msg_" + base64.b32encode(digest).decode().rstrip("=").lower()
    assert webhook_id("cb_1", ["evt_a", "evt_b"]) == expected
