"""Secrets at rest: AES-256-GCM under a master key, and hashing of API keys.

The database alone reveals no signing secret: every secret is sealed with the master key,
which lives outside the database (``RELAY_MASTER_KEY``, or a 0600 file in the data dir).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay.config import ConfigError

_VERSION = b"\x01"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("master key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: bytes = b"") -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes = b"") -> bytes:
        if sealed[:1] != _VERSION:
            raise ValueError("unknown secret format")
        return self._aead.decrypt(sealed[1:13], sealed[13:], context)


def load_master_key(configured: str, data_dir: str | Path) -> bytes:
    """The configured key, else the one in ``<data_dir>/master.key``, created on first run."""
    if configured:
        try:
            key = base64.b64decode(configured, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise ConfigError("RELAY_MASTER_KEY is not valid: expected base64 of 32 bytes")
        return key
    path = Path(data_dir) / "master.key"
    if path.exists():
        key = base64.b64decode(path.read_bytes().strip())
        if len(key) != 32:
            raise ConfigError(f"{path} does not hold base64 of 32 bytes")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(key) + b"\n")
    return key


def new_api_key() -> str:
    return "rk_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """API keys are 256-bit random strings, so a fast hash is enough: nothing to brute-force."""
    return hashlib.sha256(key.encode()).hexdigest()
