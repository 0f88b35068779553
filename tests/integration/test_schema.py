"""One schema source, two dialects: both stores end up with the same tables, columns, nullability
and indexes (PostgreSQL runs this in the PostgreSQL pass of the suite)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import psycopg
import pytest

from relay.crypto import SecretBox
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore
from tests.helpers import postgres as pg_helpers

pytestmark = pytest.mark.skipif(not pg_helpers.testing_postgres(),
                                reason="needs PostgreSQL (runs in the suite's PostgreSQL pass)")

Shape = dict[str, set[tuple[str, bool]]]


def sqlite_shape(path: Path) -> tuple[Shape, set[str]]:
    with sqlite3.connect(path) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                          "AND name NOT LIKE 'sqlite_%'")]
        shape = {t: {(r[1], not r[3] and not r[5]) for r in c.execute(f"PRAGMA table_info({t})")} for t in tables}
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                           "AND name NOT LIKE 'sqlite_%'")}
    return shape, indexes


def postgres_shape(url: str) -> tuple[Shape, set[str]]:
    with psycopg.connect(url) as c:
        schema = c.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
        shape: Shape = {}
        for table, column, nullable, is_pk in c.execute(
                "SELECT c.table_name, c.column_name, c.is_nullable = 'YES', EXISTS (SELECT 1 FROM "
                "information_schema.key_column_usage k JOIN information_schema.table_constraints t "
                "ON t.constraint_name = k.constraint_name AND t.table_schema = k.table_schema "
                "WHERE t.constraint_type = 'PRIMARY KEY' AND k.table_name = c.table_name "
                "AND k.column_name = c.column_name AND k.table_schema = c.table_schema) "
                "FROM information_schema.columns c WHERE c.table_schema = %s", (schema,)):
            shape.setdefault(table, set()).add((column, nullable and not is_pk))
        indexes = {r[0] for r in c.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s "
                                           "AND indexname NOT IN (SELECT conname FROM pg_constraint)",
                                           (schema,))}
    shape.pop("schema_migrations")
    return shape, indexes


async def test_both_dialects_build_the_same_schema(tmp_path: Path) -> None:
    box = SecretBox(os.urandom(32))
    lite = SqliteStore(tmp_path / "relay.db", box)
    url = pg_helpers.fresh_store_url(os.environ[pg_helpers.URL_VARIABLE])
    pg = PostgresStore(url, box)
    await lite.start()
    await pg.start()
    await lite.close()
    await pg.close()
    lite_tables, lite_indexes = sqlite_shape(tmp_path / "relay.db")
    pg_tables, pg_indexes = postgres_shape(url)
    assert "operations" in lite_tables
    assert lite_tables == pg_tables
    assert lite_indexes == pg_indexes
