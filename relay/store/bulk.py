"""Many-row writes (a batch of events, jobs, attempts, results) in the shape each engine runs fastest.

The shared SQL says what to write: a table, its columns, the rows, and what follows (``ON
CONFLICT …``, ``RETURNING …``); a ``Bulk`` says how the rows travel.

- SQLite (``ValuesBulk``): ``INSERT … VALUES (…), (…)``, a few hundred rows per statement. Its
  driver releases the GIL for every row it steps and must take it back after; beside a busy event
  loop each retake can wait a whole switch interval (5 ms). Measured: 2,000 rows through
  ``executemany`` took 3.8 ms each, as one statement 24 µs.
- PostgreSQL (``ArrayBulk``): one statement whatever the row count, each column one array
  parameter, ``SELECT * FROM unnest(…)``. psycopg parses a statement's text for placeholders on
  every call it has not cached, and a 256-row VALUES statement has thousands: that parse was 25 %
  of the relay's samples under load. Arrays bind in C and the statement text never changes size.
  Measured on 1,000 jobs with ``ON CONFLICT … RETURNING``: 13 µs of client CPU per row, against 27
  pipelined through ``executemany`` and 28 to 39 as VALUES.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from relay.store.sql import Connection

_MAX_PARAMS = 30000
_ROWS_PER_STATEMENT = 256


class Bulk(Protocol):
    def insert(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               tail: str = "") -> None:
        """Write ``rows`` (without waiting for the outcome where the connection can: see
        ``PostgresStore._write_pipelined``)."""
        ...

    def insert_counted(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                       tail: str = "") -> int:
        """``insert``, and the number of rows actually written (``ON CONFLICT DO NOTHING`` skips
        count 0)."""
        ...

    def insert_returning(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                         tail: str) -> list[Any]:
        """``insert`` with ``RETURNING`` in ``tail``: the returned rows, in no promised order."""
        ...

    def update(self, c: Connection, alias: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               update: str, params: Sequence[Any] = ()) -> None:
        """``WITH alias(columns) AS (rows) UPDATE …``: ``update`` joins the rows as ``alias`` and
        may use ``?`` placeholders after them (``params``)."""
        ...


def _names(columns: Sequence[str]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


def marks(count: int) -> str:
    """``count`` comma-separated ``?`` placeholders."""
    return ",".join("?" * count)


class ValuesBulk:
    """``VALUES (…), (…)`` in as few statements as the parameter limit allows (SQLite)."""

    def insert(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               tail: str = "") -> None:
        self.insert_counted(c, table, columns, rows, tail)

    def insert_counted(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                       tail: str = "") -> int:
        return sum(c.execute(sql, params).rowcount for sql, params in self._statements(table, columns, rows, tail))

    def insert_returning(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                         tail: str) -> list[Any]:
        return [row for sql, params in self._statements(table, columns, rows, tail)
                for row in c.execute(sql, params).fetchall()]

    def insert_last(self, c: sqlite3.Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                    tail: str = "", *, pad: bool = False) -> tuple[int, int]:
        """``insert_counted``, and the rowid of the last row the connection wrote: ids for the
        rows without ``RETURNING`` (see ``SqliteStore._insert_jobs``) and without another statement.

        ``pad``: one statement per ``_ROWS_PER_STATEMENT`` rows, filled up to its shape with copies of
        its last row, which ``tail``'s ``ON CONFLICT (key) DO NOTHING`` skips (the key must hold no
        NULL). Each statement is a turn of the GIL that the writer must win back from a busy event
        loop, up to a switch interval (5 ms) each: 100 events and their jobs took six statements,
        now two; a persist of 100 beside a GIL-busy thread, 69 → 41 ms (p50)."""
        if pad and "DO NOTHING" not in tail:
            raise ValueError("padding needs ON CONFLICT … DO NOTHING to skip the copies")
        written = last = 0
        for sql, params in self._statements(table, columns, rows, tail, pad):
            cursor = c.execute(sql, params)
            written += cursor.rowcount
            last = cursor.lastrowid or last
        return written, last

    def update(self, c: Connection, alias: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               update: str, params: Sequence[Any] = ()) -> None:
        one = f"({marks(len(columns))})"
        for part in _parts(rows, len(columns)):
            c.execute(f"WITH {alias}({_names(columns)}) AS (VALUES {','.join([one] * len(part))}) {update}",
                      [*chain.from_iterable(part), *params])

    def _statements(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                    tail: str, pad: bool = False) -> list[tuple[str, list[Any]]]:
        one = f"({marks(len(columns))})"
        head = f"INSERT INTO {table} ({_names(columns)}) VALUES"
        parts = _padded(rows, len(columns)) if pad else _parts(rows, len(columns))
        return [(f"{head} {','.join([one] * len(part))} {tail}", list(chain.from_iterable(part)))
                for part in parts]


def _largest(width: int) -> int:
    return max(1, min(_ROWS_PER_STATEMENT, _MAX_PARAMS // width))


def _parts(rows: Sequence[Sequence[Any]], width: int) -> list[Sequence[Sequence[Any]]]:
    """Rows in parts of ``_ROWS_PER_STATEMENT``, the rest in descending powers of two: a few
    statement shapes per table, so the driver's statement cache reuses them. Any row count as its
    own shape filled that cache with large prepared statements (+35 MB of peak RSS, measured)."""
    largest = _largest(width)
    parts: list[Sequence[Sequence[Any]]] = []
    start = 0
    while start < len(rows):
        size = largest
        while size > len(rows) - start:
            size //= 2
        parts.append(rows[start:start + size])
        start += size
    return parts


def _padded(rows: Sequence[Sequence[Any]], width: int) -> list[Sequence[Sequence[Any]]]:
    """Rows in parts of ``_largest``, each filled up to a power of two (or to ``_largest``, within
    the parameter limit) with copies of its last row: the shapes ``_parts`` uses, one statement a part."""
    largest = _largest(width)
    parts: list[Sequence[Sequence[Any]]] = []
    for start in range(0, len(rows), largest):
        part = rows[start:start + largest]
        size = min(1 << (len(part) - 1).bit_length(), largest)
        parts.append([*part, *[part[-1]] * (size - len(part))])
    return parts


class BinaryArray(list[Any]):
    """A column of values that the PostgreSQL store's connections send in binary: psycopg's text
    form of an array quotes and escapes every element in Python, a third of the relay's samples
    under load; the binary form packs elements already dumped in C (see postgres.py)."""


_FLOAT_TYPES = frozenset({"double precision", "real"})
# The array type of a column of the join rows of an UPDATE, from its Python values.
_PYTHON_TYPES: dict[type, str] = {bool: "boolean", int: "bigint", float: "double precision", str: "text",
                                  bytes: "bytea"}


class ArrayBulk:
    """One ``unnest`` statement per write, a typed array per column (PostgreSQL).

    Insert columns take their table's types, read from the catalogue once per table; the
    values of float columns are made floats (an ``int`` in a float array would not bind)."""

    def __init__(self) -> None:
        self._types: dict[str, dict[str, str]] = {}

    def insert(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               tail: str = "") -> None:
        if rows:
            c.execute(*self._insert(c, table, columns, rows, tail))

    def insert_counted(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                       tail: str = "") -> int:
        if not rows:
            return 0
        return int(c.execute(*self._insert(c, table, columns, rows, tail)).rowcount)

    def insert_returning(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                         tail: str) -> list[Any]:
        if not rows:
            return []
        return c.execute(*self._insert(c, table, columns, rows, tail)).fetchall()

    def update(self, c: Connection, alias: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               update: str, params: Sequence[Any] = ()) -> None:
        if not rows:
            return
        arrays = [list(values) for values in zip(*rows, strict=True)]
        types = [_python_type(values) for values in arrays]
        c.execute(f"WITH {alias}({_names(columns)}) AS (SELECT * FROM unnest({_casts(types)})) {update}",
                  [*_typed(arrays, types), *params])

    def _insert(self, c: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                tail: str) -> tuple[str, list[Any]]:
        declared = self._types.get(table) or self._load_types(c, table)
        types = [declared[column] for column in columns]
        arrays = _typed([list(values) for values in zip(*rows, strict=True)], types)
        return f"INSERT INTO {table} ({_names(columns)}) SELECT * FROM unnest({_casts(types)}) {tail}", arrays

    def _load_types(self, c: Connection, table: str) -> dict[str, str]:
        self._types[table] = dict(c.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(?) AND attnum > 0 AND NOT attisdropped", (table,)).fetchall())
        return self._types[table]


def _casts(types: Sequence[str]) -> str:
    return ", ".join(f"?::{name}[]" for name in types)


def _typed(arrays: list[list[Any]], types: Sequence[str]) -> list[BinaryArray]:
    return [BinaryArray(None if value is None else float(value) for value in values) if name in _FLOAT_TYPES
            else BinaryArray(values) for values, name in zip(arrays, types, strict=True)]


def _python_type(values: Sequence[Any]) -> str:
    """The array type for a column of Python values: a float among ints makes them all floats."""
    kinds = {type(value) for value in values if value is not None}
    if float in kinds:
        return "double precision"
    return _PYTHON_TYPES[kinds.pop() if kinds else str]
