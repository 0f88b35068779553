"""Durable operations in the store: created by the API, claimed under a lease by one instance's
runner, their progress written back so every instance can show it. Mixed into ``SqlStore``.

A lease that is not renewed expires, so work held by an instance that died is claimed again by
the next instance that polls. Cancelling is a state change the runner sees at its next step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from relay.crypto import SecretBox
from relay.store.base import Conflict, NotFound
from relay.store.models import Operation

T = TypeVar("T")

_COLUMNS = ("id, account_id, kind, params, state, created_at, updated_at, not_before, done_count, total, "
            "error, finished_at, cursor")


_ACTIONS = {
    "cancel": (("queued", "running", "paused"), "cancelled"),
    "pause": (("queued", "running"), "paused"),
    "resume": (("paused",), "queued"),
}


class SqlDurableOperations:
    """Expects ``_read``, ``_write`` and ``_box`` from ``SqlStore``."""

    _read: Callable[[Callable[[Any], Any]], Any]
    _write: Callable[[Callable[[Any], Any]], Any]
    _box: SecretBox

    def _operation(self, row: Any) -> Operation:
        (op_id, account_id, kind, params, state, created_at, updated_at, not_before, done, total, error,
         finished_at, cursor) = row
        return Operation(
            id=op_id, account_id=account_id, kind=kind,
            params=orjson.loads(self._box.open(bytes(params), f"operation:{op_id}".encode())),
            state=state, created_at=created_at, updated_at=updated_at, not_before=not_before, done=done,
            total=total, error=error, finished_at=finished_at, cursor=cursor,
        )

    async def create_operation(self, op: Operation) -> None:
        sealed = self._box.seal(orjson.dumps(op.params), f"operation:{op.id}".encode())
        await self._write(lambda c: c.execute(
            f"INSERT INTO operations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (op.id, op.account_id, op.kind, sealed, op.state, op.created_at, op.updated_at, op.not_before,
             op.done, op.total, op.error, op.finished_at, op.cursor),
        ))

    async def get_operation(self, op_id: str, account_id: str) -> Operation:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM operations WHERE id = ? AND account_id = ?", (op_id, account_id),
        ).fetchone())
        if row is None:
            raise NotFound(f"operation {op_id} not found")
        return self._operation(row)

    async def list_operations(self, account_id: str, kind: str | None, limit: int) -> list[Operation]:
        where, params = "account_id = ?", [account_id]
        if kind is not None:
            where += " AND kind = ?"
            params.append(kind)
        rows = await self._read(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM operations WHERE {where} ORDER BY created_at DESC, id LIMIT ?",
            (*params, limit),
        ).fetchall())
        return [self._operation(r) for r in rows]

    async def claim_operation(self, owner: str, now: float, lease_until: float) -> Operation | None:
        """Take the oldest due operation nobody holds a live lease on (conditional update: of two
        instances racing for one row, one wins)."""

        candidates = await self._read(lambda c: c.execute(
            "SELECT id FROM operations WHERE state IN ('queued', 'running') AND not_before <= ? "
            "AND lease_until < ? ORDER BY created_at LIMIT 5", (now, now),
        ).fetchall())
        if not candidates:
            return None  # the common case: polled with a read, the writer left alone

        def run(c: Any) -> Any:
            for (op_id,) in candidates:
                claimed = c.execute(
                    "UPDATE operations SET state = 'running', lease_owner = ?, lease_until = ?, updated_at = ? "
                    "WHERE id = ? AND state IN ('queued', 'running') AND lease_until < ?",
                    (owner, lease_until, now, op_id, now),
                )
                if claimed.rowcount == 1:
                    return c.execute(f"SELECT {_COLUMNS} FROM operations WHERE id = ?", (op_id,)).fetchone()
            return None

        row = await self._write(run)
        return None if row is None else self._operation(row)

    async def record_operation_progress(self, op_id: str, owner: str, done: int, total: int | None,
                                        cursor: str | None, now: float, lease_until: float) -> bool:
        """Write progress and renew the lease; False when the operation was cancelled, paused or
        taken over."""
        result = await self._write(lambda c: c.execute(
            "UPDATE operations SET done_count = ?, total = ?, cursor = ?, updated_at = ?, lease_until = ? "
            "WHERE id = ? AND state = 'running' AND lease_owner = ?",
            (done, total, cursor, now, lease_until, op_id, owner),
        ))
        return bool(result.rowcount == 1)

    async def finish_operation(self, op_id: str, owner: str, state: str, error: str | None, now: float) -> None:
        await self._write(lambda c: c.execute(
            "UPDATE operations SET state = ?, error = ?, updated_at = ?, finished_at = ?, lease_until = 0 "
            "WHERE id = ? AND state = 'running' AND lease_owner = ?",
            (state, error, now, now, op_id, owner),
        ))

    async def release_operation(self, op_id: str, owner: str) -> None:
        """This instance is stopping: let the next poll (here or elsewhere) resume it at once."""
        await self._write(lambda c: c.execute(
            "UPDATE operations SET lease_until = 0 WHERE id = ? AND lease_owner = ?", (op_id, owner),
        ))

    async def change_operation_state(self, op_id: str, account_id: str, action: str, now: float) -> Operation:
        """``cancel`` (queued, running or paused), ``pause`` (queued or running) or ``resume`` (paused)."""
        allowed, target = _ACTIONS[action]

        def run(c: Any) -> Any:
            row = c.execute("SELECT state FROM operations WHERE id = ? AND account_id = ?",
                            (op_id, account_id)).fetchone()
            if row is None:
                raise NotFound(f"operation {op_id} not found")
            if row[0] not in allowed:
                raise Conflict(f"operation {op_id} is {row[0]}: it cannot {action}")
            finished = now if target == "cancelled" else None
            c.execute("UPDATE operations SET state = ?, updated_at = ?, finished_at = ?, lease_until = 0 "
                      "WHERE id = ?", (target, now, finished, op_id))
            return c.execute(f"SELECT {_COLUMNS} FROM operations WHERE id = ?", (op_id,)).fetchone()

        return self._operation(await self._write(run))

    async def purge_finished_operations(self, before: float) -> int:
        cursor = await self._write(lambda c: c.execute(
            "DELETE FROM operations WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < ?",
            (before,),
        ))
        return int(cursor.rowcount)
