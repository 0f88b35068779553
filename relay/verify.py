"""Verifying Relay's deliveries — for receivers. Standard library only.

    from relay.verify import verify
    verify(secret="whsec_...", headers=request.headers, body=raw_body)

Raises a subclass of ``VerificationError`` naming exactly what is wrong; returns the
``webhook-id`` (use it, or each event's ``eventId``, to drop duplicates).
This file has no dependency on the rest of Relay: copy it into a receiver if you like.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

DEFAULT_TOLERANCE = 300


class VerificationError(Exception):
    """The request is not a genuine, fresh delivery."""


class MissingHeader(VerificationError):
    pass


class MalformedHeader(VerificationError):
    pass


class TimestampTooOld(VerificationError):
    pass


class TimestampInFuture(VerificationError):
    pass


class NoMatchingSignature(VerificationError):
    pass


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise MissingHeader(f"missing header {name}")


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("secret is not whsec_ followed by base64") from None


def verify(
    secret: str | bytes | Iterable[str | bytes],
    headers: Mapping[str, str],
    body: bytes,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str:
    """Check ``webhook-signature`` against one secret or several (rotation). Returns webhook-id."""
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    msg_id = _header(headers, "webhook-id")
    raw_ts = _header(headers, "webhook-timestamp").strip()
    signatures = _header(headers, "webhook-signature")
    if not raw_ts.isdigit():
        raise MalformedHeader(f"webhook-timestamp {raw_ts!r} is not unix seconds")
    timestamp = int(raw_ts)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise TimestampTooOld(f"webhook-timestamp {timestamp} is more than {tolerance}s old")
    if timestamp > current + tolerance:
        raise TimestampInFuture(f"webhook-timestamp {timestamp} is more than {tolerance}s ahead")

    signed = msg_id.encode() + b"." + raw_ts.encode() + b"." + body
    expected = [
        hmac.new(_key(s), signed, hashlib.sha256).digest() for s in secrets
    ]
    seen_v1 = False
    for entry in signatures.split():
        version, sep, value = entry.partition(",")
        if not sep:
            raise MalformedHeader(f"signature entry {entry!r} is not <version>,<base64>")
        if version != "v1":
            continue
        seen_v1 = True
        try:
            candidate = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(candidate, digest) for digest in expected):
            return msg_id
    if not seen_v1:
        raise NoMatchingSignature("webhook-signature has no v1 entry")
    raise NoMatchingSignature("no v1 signature matches the given secret(s)")
