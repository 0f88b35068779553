"""Padded SQLite inserts (``ValuesBulk.insert_last(pad=True)``) must write exactly the rows unpadded
ones do, count them alike, and report the last id written: the store reads its new jobs' ids from
those two, in VALUES order. Real SQLite, in memory, on a table shaped like ``jobs`` (AUTOINCREMENT and
one unique key). The skipped copies use up ids (AUTOINCREMENT counts them), so ids after a padded
insert can differ from an unpadded one's; only their order and contiguity within one insert count."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.store.bulk import ValuesBulk, _largest, _padded

CONFLICT = "ON CONFLICT (k) DO NOTHING"


def _table(existing: set[int]) -> sqlite3.Connection:
    c = sqlite3.connect(":memory:", isolation_level=None)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, k INTEGER NOT NULL UNIQUE, v TEXT NOT NULL)")
    for k in sorted(existing):
        c.execute("INSERT INTO t (k, v) VALUES (?, 'old')", (k,))
    return c


def _written(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return c.execute("SELECT id, k, v FROM t ORDER BY id").fetchall()


@settings(max_examples=150, deadline=None)
@given(existing=st.sets(st.integers(0, 400), max_size=30),
       batches=st.lists(st.lists(st.integers(0, 400), min_size=1, max_size=600), min_size=1, max_size=3))
def test_a_padded_insert_writes_and_reports_what_an_unpadded_one_does(existing: set[int],
                                                                      batches: list[list[int]]) -> None:
    padded, plain = _table(existing), _table(existing)
    for number, keys in enumerate(batches):
        rows = [(k, f"b{number}-{i}") for i, k in enumerate(keys)]
        written, last = ValuesBulk().insert_last(padded, "t", ("k", "v"), rows, CONFLICT, pad=True)
        assert written == ValuesBulk().insert_last(plain, "t", ("k", "v"), rows, CONFLICT)[0]
        new = [row for row in _written(padded) if row[2].startswith(f"b{number}-")]
        assert len(new) == written
        if written:
            assert last == new[-1][0]
        if written == len(rows):  # every row new: the ids up to the last one, in VALUES order
            assert [row[0] for row in new] == list(range(last - written + 1, last + 1))
            assert [row[1:] for row in new] == rows
    assert [row[1:] for row in _written(padded)] == [row[1:] for row in _written(plain)]


@given(count=st.integers(1, 1200), width=st.sampled_from([1, 10, 13, 200, 30000]))
def test_padding_fills_parts_to_a_shape_of_parts_with_the_last_row(count: int, width: int) -> None:
    rows = [(i,) for i in range(count)]
    largest = _largest(width)
    parts = _padded(rows, width)
    assert [row for part in parts for row in part[:largest]][:count] == rows
    shapes = {largest} | {1 << i for i in range(largest.bit_length())}  # what _parts can use
    for part in parts:
        assert len(part) in shapes and len(part) * width <= 30000  # the parameter limit
    last = parts[-1]
    real = count - largest * (len(parts) - 1)
    assert last[real:] == [rows[-1]] * (len(last) - real)


def test_padding_is_refused_without_a_conflict_clause_to_skip_the_copies() -> None:
    with pytest.raises(ValueError, match="DO NOTHING"):
        ValuesBulk().insert_last(_table(set()), "t", ("k", "v"), [(1, "a")], "", pad=True)
