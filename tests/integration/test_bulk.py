"""Many-row writes: SQLite's VALUES statements and PostgreSQL's unnest arrays must write, skip and
return exactly the same rows, whatever the rows hold (NULL columns, ints in float columns,
duplicate keys within one write, any text). Runs on both real engines, in the PostgreSQL pass."""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.crypto import SecretBox
from relay.store.bulk import ArrayBulk, Bulk, ValuesBulk
from relay.store.postgres import PostgresStore, configure_adapters
from relay.store.sql import JOB_COLUMNS, JOB_CONFLICT, JOB_RETURNED
from relay.store.sqlite import SqliteStore
from tests.helpers import postgres as pg_helpers

pytestmark = pytest.mark.skipif(not pg_helpers.testing_postgres(),
                                reason="needs PostgreSQL (runs in the suite's PostgreSQL pass)")

ATTEMPT_COLUMNS = ("batch_id", "callback_id", "job_count", "at", "status", "latency_ms", "error",
                   "response_excerpt", "outcome")


class PsycopgConnection:
    """The ``?``-placeholder Connection the shared SQL expects, over a plain psycopg connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        raise AssertionError("bulk writes never use executemany")


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[Bulk, Any]]]:
    """Both stores' real schemas (their migrations), each with the Bulk its store uses."""
    box = SecretBox(os.urandom(32))
    path = Path(tmp_path_factory.mktemp("bulk")) / "relay.db"
    url = pg_helpers.fresh_store_url(os.environ[pg_helpers.URL_VARIABLE])

    async def migrate() -> None:
        for store in (SqliteStore(path, box), PostgresStore(url, box)):
            await store.start()
            await store.close()

    asyncio.run(migrate())
    lite = sqlite3.connect(path, isolation_level=None)
    pg = psycopg.connect(url, autocommit=True)
    configure_adapters(pg.adapters)  # as the store's pool configures its connections
    yield [(ValuesBulk(), lite), (ArrayBulk(), PsycopgConnection(pg))]
    lite.close()
    pg.close()


_round = itertools.count()
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
numbers = st.integers(0, 2**40) | st.floats(0, 2**40, allow_nan=False)
job_rows = st.lists(st.tuples(st.sampled_from("abcdefgh"), st.sampled_from(["cb1", "cb2"]), st.none() | texts,
                              st.sampled_from(["t1", "t2"]), st.integers(0, 5), numbers, numbers,
                              st.sampled_from(["pending", "held"]), st.none() | texts),
                    max_size=40)
attempt_rows = st.lists(st.tuples(texts, texts, st.integers(0, 1000), numbers, st.none() | st.integers(100, 599),
                                  numbers, st.none() | texts, st.none() | texts, st.sampled_from(["retry", "dead"])),
                        min_size=1, max_size=20)


def _normal(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return sorted((tuple(float(v) if isinstance(v, int | float) else v for v in row) for row in rows), key=repr)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=job_rows, second=job_rows, attempts=attempt_rows, batch=texts,
       dues=st.lists(numbers, min_size=80, max_size=80))
def test_values_and_arrays_write_the_same_rows(engines: list[tuple[Bulk, Any]], first: list[tuple[Any, ...]],
                                               second: list[tuple[Any, ...]], attempts: list[tuple[Any, ...]],
                                               batch: str, dues: list[int | float]) -> None:
    number = next(_round)
    tag = f"r{number}-"  # each example its own event ids and seqs, in tables shared by all examples
    first = [(number * 8 + "abcdefgh".index(row[0]), tag + row[0], *row[1:]) for row in first]
    second = [(number * 8 + "abcdefgh".index(row[0]), tag + row[0], *row[1:]) for row in second]
    seen: list[Any] = []
    for bulk, c in engines:
        returned = bulk.insert_returning(c, "jobs", JOB_COLUMNS, first, f"{JOB_CONFLICT} RETURNING {JOB_RETURNED}")
        written = bulk.insert_counted(c, "jobs", JOB_COLUMNS, second, JOB_CONFLICT)
        jobs = sorted(c.execute("SELECT event_id, callback_id, id FROM jobs WHERE event_id LIKE ?",
                                (tag + "%",)).fetchall())  # sorted here: both engines give each job the same due
        bulk.update(c, "v", ("id", "batch_id", "at"),
                    [(job[2], batch, due) for job, due in zip(jobs, dues, strict=False)],
                    "UPDATE jobs SET batch_id = v.batch_id, next_attempt_at = v.at, attempts = attempts + ? "
                    "FROM v WHERE jobs.id = v.id", (2,))
        bulk.insert(c, "attempts", ATTEMPT_COLUMNS, [(tag + row[0], *row[1:]) for row in attempts])
        stored = c.execute("SELECT event_id, callback_id, ordering_key, topic, partition, next_attempt_at, "
                           "created_at, state, held_by, batch_id, attempts FROM jobs WHERE event_id LIKE ?",
                           (tag + "%",)).fetchall()
        logged = c.execute(f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM attempts WHERE batch_id LIKE ?",
                           (tag + "%",)).fetchall()
        seen.append((_normal(row[1:] for row in returned), written, _normal(stored), _normal(logged)))

    firsts = {row[:3]: row for row in reversed(first)}  # the first of each key wins, later ones conflict
    expected = _normal((event, callback, key, created, state, topic, partition)
                       for _, event, callback, key, topic, partition, _, created, state, _ in firsts.values())
    assert seen[0][0] == expected
    assert seen[0][1] == len({row[:3] for row in second} - set(firsts))
    assert len(seen[0][2]) == len(firsts.keys() | {row[:3] for row in second})
    assert all(row[-2:] == (batch, 2.0) for row in seen[0][2])
    assert len(seen[0][3]) == len(attempts)
    assert seen[1] == seen[0]
