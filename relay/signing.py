"""Producing delivery signatures: Standard Webhooks ``v1`` (HMAC-SHA256) and the ENS header.

One signature per POST, not per event: the whole batch body is signed once.
During a secret rotation a POST carries one ``v1`` entry per valid secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _random
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: its base64 part, decoded (as the specification says)."""
    encoded = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(encoded, validate=True)


def sign_v1(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature``: space-separated ``v1,<sig>`` entries, one per valid key."""
    return " ".join(sign_v1(key, msg_id, timestamp, body) for key in keys)


def ens_signature(key: bytes, body: bytes) -> str:
    """``x-sfmc-ens-signature``: base64(HMAC-SHA256(key, raw body)).

    ``key`` is the same decoded secret bytes as for ``v1`` (see docs: the ENS key handling).
    """
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


def delivery_headers(
    keys: list[bytes], msg_id: str, timestamp: int, body: bytes, ens: bool = False
) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id, timestamp, body),
    }
    if ens and keys:
        headers["x-sfmc-ens-signature"] = ens_signature(keys[0], body)
    return headers
