"""SQLite's packed reads (all rows in one step, as JSON that SQLite builds) give back exactly the
rows a plain read gives: the same text, integers, floats and bytes, NULLs where they were."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.store.rows import RowShape
from relay.store.sqlite import _packed, _unpacked

SHAPE = RowShape(("name", "count", "at", "sealed", "options"), reals={"at"}, blobs={"sealed", "options"})
SELECT = 'SELECT name, count, at, sealed, options FROM t WHERE "offset" >= ? ORDER BY "offset"'

rows = st.lists(st.tuples(
    st.text(),  # quotes, backslashes, control characters, NUL, astral planes
    st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.none() | st.floats(allow_nan=False, min_value=-1e99, max_value=1e99) | st.sampled_from([0.1, -0.0, 1 / 3]),
    st.none() | st.binary(),
    st.none() | st.binary() | st.text(),  # a TEXT column may hold bytes, and the other way round
), max_size=30)


def _table(values: list[tuple[Any, ...]]) -> sqlite3.Connection:
    c = sqlite3.connect(":memory:")
    c.execute('CREATE TABLE t ("offset" INTEGER, name TEXT, count INTEGER, at REAL, sealed BLOB, options TEXT)')
    c.executemany('INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)', [(i, *row) for i, row in enumerate(values)])
    return c


def _as_bytes(value: Any) -> Any:
    return value.encode() if isinstance(value, str) else value


@settings(max_examples=200, deadline=None)
@given(rows)
def test_packed_rows_are_the_rows_a_plain_read_gives(values: list[tuple[Any, ...]]) -> None:
    c = _table(values)
    plain = c.execute(SELECT, (0,)).fetchall()
    (text,) = c.execute(_packed(SELECT, SHAPE), (0,)).fetchone()
    packed = _unpacked(text, SHAPE)
    assert len(packed) == len(plain)
    for got, want in zip(packed, plain, strict=True):
        name, count, at, sealed, options = got
        assert (name, count, sealed) == (want[0], want[1], want[3])
        assert at == want[2] and type(at) is type(want[2])
        if want[2] is not None:
            assert str(at) == str(want[2])  # the same double: -0.0 stays -0.0
        assert options == _as_bytes(want[4])  # bytes-typed columns come back as bytes


def test_no_rows_pack_into_an_empty_list() -> None:
    c = _table([])
    (text,) = c.execute(_packed(SELECT, SHAPE), (0,)).fetchone()
    assert _unpacked(text, SHAPE) == []


def test_a_shape_names_only_its_own_columns() -> None:
    with pytest.raises(ValueError, match="not among the columns"):
        RowShape(("a",), reals={"b"})
