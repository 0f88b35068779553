"""Verifying Relay's deliveries — for receivers. Standard library only (plus ``cryptography`` for
Ed25519 ``whpk_`` keys, imported only when one is given).

    from relay.verify import verify
    webhook_id = verify("whsec_...", request.headers, raw_body)

``verify`` raises a subclass of ``VerificationError`` that names exactly what is wrong, and
returns the ``webhook-id`` (drop a delivery whose id you have already processed).
This file depends on nothing else in Relay: copy it into a receiver if you like.

Rules (pinned by ``schemas/signature-vectors.json``):
- signed content is ``{webhook-id}.{webhook-timestamp}.{raw body}``, byte for byte;
- ``webhook-timestamp`` is unix seconds, digits only; outside ±tolerance (default 300 s) fails;
- ``webhook-signature`` is space-separated ``<version>,<base64>`` entries; extra spaces are
  ignored; unknown versions are skipped; an entry without a comma is malformed; an entry whose
  base64 is broken simply does not match; one matching entry is enough;
- ``v1`` entries are checked against ``whsec_`` secrets (HMAC-SHA256), ``v1a`` entries against
  ``whpk_`` public keys (Ed25519).
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


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _hmac_key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    key = _b64(secret.removeprefix("whsec_"))
    if key is None:
        raise ValueError("secret is not whsec_ followed by base64")
    return key


def _ed25519_check(public_keys: list[str], signed: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    for text in public_keys:
        raw = _b64(text.removeprefix("whpk_"))
        if raw is None or len(raw) != 32:
            raise ValueError("public key is not whpk_ followed by base64 of 32 bytes")
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, signed)
            return True
        except InvalidSignature:
            continue
    return False


def verify(
    secret: str | bytes | Iterable[str | bytes],
    headers: Mapping[str, str],
    body: bytes,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str:
    """Check ``webhook-signature`` against one key or several (rotation). Returns webhook-id."""
    keys = [secret] if isinstance(secret, str | bytes) else list(secret)
    public_keys = [k for k in keys if isinstance(k, str) and k.startswith("whpk_")]
    hmac_keys = [_hmac_key(k) for k in keys if not (isinstance(k, str) and k.startswith("whpk_"))]

    msg_id = _header(headers, "webhook-id")
    raw_ts = _header(headers, "webhook-timestamp").strip()
    signatures = _header(headers, "webhook-signature")
    if not raw_ts.isascii() or not raw_ts.isdigit():
        raise MalformedHeader(f"webhook-timestamp {raw_ts!r} is not unix seconds")
    timestamp = int(raw_ts)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise TimestampTooOld(f"webhook-timestamp {timestamp} is more than {tolerance}s old")
    if timestamp > current + tolerance:
        raise TimestampInFuture(f"webhook-timestamp {timestamp} is more than {tolerance}s ahead")

    signed = msg_id.encode() + b"." + raw_ts.encode() + b"." + body
    expected = [hmac.new(k, signed, hashlib.sha256).digest() for k in hmac_keys]
    entries = signatures.split()
    if not entries:
        raise MalformedHeader("webhook-signature is empty")
    for entry in entries:
        version, sep, value = entry.partition(",")
        if not sep:
            raise MalformedHeader(f"signature entry {entry!r} is not <version>,<base64>")
        candidate = _b64(value)
        if candidate is None:
            continue
        if version == "v1" and any(hmac.compare_digest(candidate, d) for d in expected):
            return msg_id
        if version == "v1a" and public_keys and _ed25519_check(public_keys, signed, candidate):
            return msg_id
    raise NoMatchingSignature("no signature in webhook-signature matches the given key(s)")


def verify_ens(secret: str | bytes, header_value: str, body: bytes) -> None:
    """Check ``x-sfmc-ens-signature`` = base64(HMAC-SHA256(decoded whsec_ secret, raw body))."""
    candidate = _b64(header_value.strip())
    if candidate is None:
        raise MalformedHeader("x-sfmc-ens-signature is not base64")
    digest = hmac.new(_hmac_key(secret), body, hashlib.sha256).digest()
    if not hmac.compare_digest(candidate, digest):
        raise NoMatchingSignature("x-sfmc-ens-signature does not match")
