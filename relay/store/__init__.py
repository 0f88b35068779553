"""Stores behind one interface; ``open_store`` picks one from the store URL."""

from __future__ import annotations

from relay.crypto import SecretBox
from relay.store.base import Conflict, NotFound, Store
from relay.store.sql import SqlStore
from relay.store.sqlite import SqliteStore

__all__ = ["Conflict", "NotFound", "SqlStore", "SqliteStore", "Store", "open_store"]


def open_store(url: str, box: SecretBox) -> SqlStore:
    if url.startswith("sqlite:///"):
        return SqliteStore.from_url(url, box)
    if url.startswith(("postgresql://", "postgres://")):
        from relay.store.postgres import PostgresStore  # psycopg is only loaded when used

        return PostgresStore(url, box)
    raise ValueError(f"unsupported store URL {url.split(':', 1)[0]}://…; use sqlite:/// or postgresql://")
