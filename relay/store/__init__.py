"""Stores behind one interface; ``open_store`` picks one from the store URL."""

from __future__ import annotations

from relay.crypto import SecretBox
from relay.store.base import Conflict, NotFound, Store
from relay.store.sqlite import SqliteStore

__all__ = ["Conflict", "NotFound", "SqliteStore", "Store", "open_store"]


def open_store(url: str, box: SecretBox) -> SqliteStore:
    if url.startswith("sqlite:///"):
        return SqliteStore.from_url(url, box)
    raise NotImplementedError(
        f"store {url.split(':', 1)[0]} is not available yet; use sqlite:///path/relay.db"
    )
