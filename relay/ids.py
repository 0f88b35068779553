"""Resource ids: a short type prefix (so a pasted id says what it is) and 128 random bits."""

from __future__ import annotations

import base64
import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_" + base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
