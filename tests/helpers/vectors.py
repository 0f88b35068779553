"""Builds ``schemas/signature-vectors.json`` from fixed keys, ids and bodies.

    python -m tests.helpers.vectors > schemas/signature-vectors.json

A test checks the committed file equals this output, so the vectors and the signer cannot drift.
"""

from __future__ import annotations

import base64
import sys
from typing import Any

import orjson

from relay.signing import SigningKeys, delivery_headers, public_key, secret_key, sign_v1

NOW = 1_795_400_000
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"\x07" * 32).decode()
SIGNING_KEY = "whsk_" + base64.b64encode(bytes(range(200, 232))).decode()
PUBLIC_KEY = public_key(SIGNING_KEY)
MSG_ID = "msg_2kq7a9x4c8m1v5b3n6z0p2r4t6"
BODY = b'[{"eventId":"evt_1","eventCategoryType":"TransactionalSendEvents.EmailBounced","mid":514009876}]'
UNICODE_BODY = '[{"eventId":"evt_2","info":{"to":"zoë@exämple.com","reason":"Boîte pleine 📭 — 満杯"}}]'.encode()
LARGE_BODY = b"[" + b",".join(b'{"eventId":"evt_%06d","pad":"%s"}' % (i, b"x" * 40) for i in range(1200)) + b"]"


def _headers(keys: SigningKeys, body: bytes, msg_id: str = MSG_ID, ts: int = NOW,
             ens: bool = False) -> dict[str, str]:
    headers = delivery_headers(keys, msg_id, ts, body, ens=ens)
    headers.pop("content-type")
    return headers


def _body(body: bytes) -> dict[str, str]:
    return {"bodyBase64": base64.b64encode(body).decode()}


def _case(name: str, keys: list[str], headers: dict[str, str], body: bytes, **extra: Any) -> dict[str, Any]:
    return {"name": name, "keys": keys, "headers": headers, **_body(body), **extra}


def build() -> dict[str, Any]:
    hmac_only = SigningKeys.from_secrets([SECRET])
    rotation = SigningKeys.from_secrets([SECRET, OLD_SECRET])
    both = SigningKeys.from_secrets([SECRET, SIGNING_KEY])
    ed_only = SigningKeys.from_secrets([SIGNING_KEY])
    basic = _headers(hmac_only, BODY)
    good_v1 = basic["webhook-signature"]
    wrong_v1 = sign_v1(secret_key(WRONG_SECRET), MSG_ID, NOW, BODY)

    valid = [
        _case("v1 basic", [SECRET], basic, BODY),
        _case("v1 non-ASCII UTF-8 body", [SECRET], _headers(hmac_only, UNICODE_BODY), UNICODE_BODY),
        _case("v1 large body (about 60 KB)", [SECRET], _headers(hmac_only, LARGE_BODY), LARGE_BODY),
        _case("v1 empty body", [SECRET], _headers(hmac_only, b""), b""),
        _case("rotation: new secret matches", [SECRET], _headers(rotation, BODY), BODY),
        _case("rotation: old secret matches", [OLD_SECRET], _headers(rotation, BODY), BODY),
        _case("v1a Ed25519 with the public key", [PUBLIC_KEY], _headers(ed_only, BODY), BODY),
        _case("v1 and v1a in one header, public key only", [PUBLIC_KEY], _headers(both, BODY), BODY),
        _case("v1 and v1a in one header, secret only", [SECRET], _headers(both, BODY), BODY),
        _case("extra spaces around entries", [SECRET], {**basic, "webhook-signature": f"  {good_v1}   "}, BODY),
        _case("unknown version tag is skipped", [SECRET],
              {**basic, "webhook-signature": f"v9,Zm9vYmFy {good_v1}"}, BODY),
        _case("several signatures, one matches", [SECRET],
              {**basic, "webhook-signature": f"{wrong_v1} {good_v1}"}, BODY),
        _case("timestamp exactly at the tolerance", [SECRET], _headers(hmac_only, BODY, ts=NOW - 300), BODY),
    ]
    tampered_ts = {**basic, "webhook-timestamp": str(NOW + 1)}
    invalid = [
        _case("tampered body", [SECRET], basic, BODY.replace(b"514009876", b"514009877"),
              error="NoMatchingSignature"),
        _case("tampered webhook-id", [SECRET], {**basic, "webhook-id": MSG_ID + "x"}, BODY,
              error="NoMatchingSignature"),
        _case("tampered webhook-timestamp", [SECRET], tampered_ts, BODY, error="NoMatchingSignature"),
        _case("expired (301 s old)", [SECRET], _headers(hmac_only, BODY, ts=NOW - 301), BODY,
              error="TimestampTooOld"),
        _case("from the future (301 s ahead)", [SECRET], _headers(hmac_only, BODY, ts=NOW + 301), BODY,
              error="TimestampInFuture"),
        _case("wrong secret", [WRONG_SECRET], basic, BODY, error="NoMatchingSignature"),
        _case("v1a with the wrong public key", [public_key("whsk_" + base64.b64encode(b"\x01" * 32).decode())],
              _headers(ed_only, BODY), BODY, error="NoMatchingSignature"),
        _case("v1a signature checked as v1", [SECRET], _headers(ed_only, BODY), BODY,
              error="NoMatchingSignature"),
        _case("missing webhook-signature", [SECRET],
              {k: v for k, v in basic.items() if k != "webhook-signature"}, BODY, error="MissingHeader"),
        _case("missing webhook-id", [SECRET], {k: v for k, v in basic.items() if k != "webhook-id"}, BODY,
              error="MissingHeader"),
        _case("timestamp with a fraction", [SECRET], {**basic, "webhook-timestamp": f"{NOW}.5"}, BODY,
              error="MalformedHeader"),
        _case("timestamp not a number", [SECRET], {**basic, "webhook-timestamp": "yesterday"}, BODY,
              error="MalformedHeader"),
        _case("entry without a version", [SECRET], {**basic, "webhook-signature": good_v1[3:]}, BODY,
              error="MalformedHeader"),
        _case("empty webhook-signature", [SECRET], {**basic, "webhook-signature": "  "}, BODY,
              error="MalformedHeader"),
        _case("broken base64", [SECRET], {**basic, "webhook-signature": "v1,@@not-base64@@"}, BODY,
              error="NoMatchingSignature"),
        _case("only unknown versions", [SECRET], {**basic, "webhook-signature": "v2," + good_v1[3:]}, BODY,
              error="NoMatchingSignature"),
    ]
    ens_headers = _headers(hmac_only, BODY, ens=True)
    ens = [
        {"name": "ENS header over the raw body", "key": SECRET, **_body(BODY),
         "x-sfmc-ens-signature": ens_headers["x-sfmc-ens-signature"], "valid": True},
        {"name": "ENS header, tampered body", "key": SECRET, **_body(BODY + b" "),
         "x-sfmc-ens-signature": ens_headers["x-sfmc-ens-signature"], "valid": False},
    ]
    return {
        "description": (
            "Signature test vectors for Relay deliveries. Standard Webhooks: signed content is "
            "'{webhook-id}.{webhook-timestamp}.{body}'; v1 = base64(HMAC-SHA256(base64decode(secret "
            "without 'whsec_'), content)); v1a = base64(Ed25519 signature of content) verified with the "
            "raw 32-byte key in 'whpk_'+base64. ENS: x-sfmc-ens-signature = base64(HMAC-SHA256(same "
            "decoded secret bytes, raw body)). Verify with now = 'now' and tolerance = 'tolerance' seconds."
        ),
        "now": NOW,
        "tolerance": 300,
        "valid": valid,
        "invalid": invalid,
        "ens": ens,
    }


def render() -> bytes:
    return orjson.dumps(build(), option=orjson.OPT_INDENT_2) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(render())
