"""Producing delivery signatures: Standard Webhooks ``v1`` (HMAC-SHA256), ``v1a`` (Ed25519), and
the ENS header.

What is signed (both Standard Webhooks schemes): ``{webhook-id}.{webhook-timestamp}.{raw body}``.
One signature per POST, not per event: the whole batch body is signed once. During a rotation a
POST carries one entry per valid key, newest first.

Keys:
- ``whsec_`` + base64(32 random bytes): HMAC key = the base64 part, decoded.
- ``whsk_`` + base64(32-byte Ed25519 seed) signs; ``whpk_`` + base64(32-byte raw public key)
  verifies — receivers need no shared secret.
- ENS ``x-sfmc-ens-signature`` = base64(HMAC-SHA256(key, raw body)) where key is the same
  decoded bytes of the callback's newest ``whsec_`` secret (not its text).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from relay.ids import base32_lower

SECRET_PREFIX = "whsec_"
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(32)).decode()


def new_signing_key() -> str:
    """An Ed25519 signing key: ``whsk_`` + base64 of its 32-byte seed."""
    return SIGNING_KEY_PREFIX + base64.b64encode(_random.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: its base64 part, decoded (as the specification says)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


@lru_cache(maxsize=4096)
def _ed25519(signing_key: str) -> Ed25519PrivateKey:
    seed = base64.b64decode(signing_key.removeprefix(SIGNING_KEY_PREFIX), validate=True)
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(signing_key: str) -> str:
    """``whpk_`` public key of a ``whsk_`` signing key."""
    raw = _ed25519(signing_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return b"%s.%d.%s" % (msg_id.encode(), timestamp, body)


def sign_v1(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, signed_content(msg_id, timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_v1a(signing_key: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signature = _ed25519(signing_key).sign(signed_content(msg_id, timestamp, body))
    return "v1a," + base64.b64encode(signature).decode()


def ens_signature(key: bytes, body: bytes) -> str:
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """A callback's valid keys, decoded once: HMAC keys and Ed25519 signing keys."""

    hmac_keys: tuple[bytes, ...]
    ed25519_keys: tuple[str, ...]

    @classmethod
    def from_secrets(cls, secrets: Iterable[str]) -> SigningKeys:
        """Decoded once per set of secrets: every POST asks."""
        return _signing_keys(tuple(secrets))


@lru_cache(maxsize=4096)
def _signing_keys(secrets: tuple[str, ...]) -> SigningKeys:
    return SigningKeys(
        tuple(secret_key(s) for s in secrets if s.startswith(SECRET_PREFIX)),
        tuple(s for s in secrets if s.startswith(SIGNING_KEY_PREFIX)),
    )


def signature_header(keys: SigningKeys, msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature``: space-separated entries, one per valid key."""
    entries = [sign_v1(k, msg_id, timestamp, body) for k in keys.hmac_keys]
    entries += [sign_v1a(k, msg_id, timestamp, body) for k in keys.ed25519_keys]
    return " ".join(entries)


def delivery_headers(
    keys: SigningKeys | Sequence[bytes], msg_id: str, timestamp: int, body: bytes, ens: bool = False
) -> dict[str, str]:
    if not isinstance(keys, SigningKeys):
        keys = SigningKeys(tuple(keys), ())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id, timestamp, body),
    }
    if ens and keys.hmac_keys:
        headers["x-sfmc-ens-signature"] = ens_signature(keys.hmac_keys[0], body)
    return headers


def webhook_id(scope: str, event_ids: list[str]) -> str:
    """Derived from what is sent (and to whom, or for which recovery), so sending the same events
    again in the same scope keeps the same id — across retries, restarts and hand-overs."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(scope.encode())
    for event_id in event_ids:
        digest.update(b"\x00" + event_id.encode())
    return "msg_" + base32_lower(digest.digest())
