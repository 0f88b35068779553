"""Rows into records by name: one declaration says which SQL expression fills which field, and
builds both the SELECT list and the record, so a column added or moved cannot shift a value
into the wrong field."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

R = TypeVar("R")


class Columns(Generic[R]):
    def __init__(self, record: Callable[..., R], *names: str, **expressions: str) -> None:
        """``names`` are fields read from a column of the same name; ``expressions`` map a field to
        any SQL expression (``body="e.body"``)."""
        self._record = record
        self.fields: tuple[str, ...] = (*names, *expressions)
        self.sql = ", ".join([*(quoted(n) for n in names), *expressions.values()])
        # Fields declared in the record's own order are passed by position: a window load builds
        # thousands of jobs, and a keyword dict per row was 6 % of the relay's time under load.
        declared = tuple(f.name for f in dataclasses.fields(record)) if dataclasses.is_dataclass(record) else ()
        self._positional = declared[:len(self.fields)] == self.fields

    def build(self, row: Sequence[Any]) -> R:
        if self._positional and len(row) == len(self.fields):
            return self._record(*row)
        return self._record(**dict(zip(self.fields, row, strict=True)))

    def build_all(self, rows: Sequence[Sequence[Any]]) -> list[R]:
        return [self.build(row) for row in rows]


class RowShape:
    """The columns a query selects, and which hold floats or bytes: what an engine must know to carry
    rows through a form of its own and give the values back exactly (``SqliteStore._read_rows``)."""

    def __init__(self, names: Sequence[str], *, reals: Iterable[str] = (), blobs: Iterable[str] = ()) -> None:
        self.names = tuple(names)
        self.reals = frozenset(reals)
        self.blobs = frozenset(blobs)
        unknown = (self.reals | self.blobs) - set(self.names)
        if unknown:
            raise ValueError(f"not among the columns: {sorted(unknown)}")
        self.real_positions = tuple(i for i, name in enumerate(self.names) if name in self.reals)
        self.blob_positions = tuple(i for i, name in enumerate(self.names) if name in self.blobs)


def quoted(name: str) -> str:
    return '"offset"' if name == "offset" else name
