"""Queries for the people who run Relay: dead letters, attempts, message status, stats, callback
health and retention. Mixed into ``SqlStore`` (same dialect rules); every query is scoped to an
account. They return typed rows (``views.py``); the API decides their JSON."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from relay.store.base import NotFound
from relay.store.bulk import marks
from relay.store.rows import Columns
from relay.store.views import (
    AttemptBucket,
    AttemptCount,
    AttemptRow,
    CallbackHealth,
    DeadLetter,
    DeadLetterDetail,
    DeadLetterFilter,
    EventCount,
    HealthEvent,
    JobState,
    MessageEvent,
    StoredDelivery,
)

T = TypeVar("T")

_DEADLETTER_FROM = (
    " FROM deadletters d JOIN jobs j ON j.id = d.job_id JOIN events e ON e.seq = j.event_seq "
    "JOIN callbacks c ON c.id = d.callback_id"
)
_DEADLETTER = Columns(
    DeadLetter, id="d.id", job_id="d.job_id", batch_id="d.batch_id", callback_id="d.callback_id",
    reason="d.reason", created_at="d.created_at", event_id="j.event_id", attempts="j.attempts",
    event_type="e.type", subscriber_key="e.subscriber_key", message_key="e.message_key",
)
_DEADLETTER_SELECT = f"SELECT {_DEADLETTER.sql}{_DEADLETTER_FROM}"
_ATTEMPT = Columns(AttemptRow, "id", "batch_id", "callback_id", "job_count", "at", "status", "latency_ms",
                   "error", "response_excerpt", "outcome")
_STORED_DELIVERY = Columns(StoredDelivery, job_id="j.id", event_id="j.event_id", body="e.body")
_JOB_STATE = Columns(JobState, "callback_id", "state", "attempts", "finished_at", "batch_id")


def _deadletter_filter(account_id: str, selection: DeadLetterFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = ["c.account_id = ?"]
    params: list[Any] = [account_id]
    for value, condition in ((selection.callback_id, "d.callback_id = ?"), (selection.event_type, "e.type = ?"),
                             (selection.since, "d.created_at >= ?"), (selection.until, "d.created_at < ?")):
        if value is not None:
            clauses.append(condition)
            params.append(value)
    if selection.ids is not None:
        clauses.append(f"d.id IN ({','.join('?' * len(selection.ids)) or 'NULL'})")
        params += list(selection.ids)
    if selection.reason:
        clauses.append("LOWER(d.reason) LIKE ?")
        params.append(f"%{selection.reason.lower()}%")
    return " AND ".join(clauses), params


def _routed_filter(callback_id: str, since_ms: int, until_ms: int,
                   event_types: Sequence[str] | None) -> tuple[str, list[Any]]:
    where = "j.callback_id = ? AND e.timestamp_ms >= ? AND e.timestamp_ms < ?"
    params: list[Any] = [callback_id, since_ms, until_ms]
    if event_types:
        where += f" AND e.type IN ({','.join('?' * len(event_types))})"
        params += list(event_types)
    return where, params


class SqlOperations:
    """Expects ``_read`` and ``_write`` from ``SqlStore``."""

    _read: Callable[[Callable[[Any], Any]], Any]
    _write: Callable[[Callable[[Any], Any]], Any]

    # -- dead letters ---------------------------------------------------------------------
    async def list_deadletters_page(self, account_id: str, selection: DeadLetterFilter, after: int,
                                    limit: int) -> list[DeadLetter]:
        where, params = _deadletter_filter(account_id, selection)
        rows = await self._read(lambda c: c.execute(
            f"{_DEADLETTER_SELECT} WHERE {where} AND d.id > ? ORDER BY d.id LIMIT ?",
            (*params, after, limit),
        ).fetchall())
        return _DEADLETTER.build_all(rows)

    async def count_deadletters_matching(self, account_id: str, selection: DeadLetterFilter) -> int:
        where, params = _deadletter_filter(account_id, selection)
        row = await self._read(lambda c: c.execute(
            f"SELECT COUNT(*){_DEADLETTER_FROM} WHERE {where}", params).fetchone())
        return int(row[0])

    async def get_deadletter(self, account_id: str, deadletter_id: int) -> DeadLetterDetail:
        def run(c: Any) -> DeadLetterDetail:
            row = c.execute(f"{_DEADLETTER_SELECT} WHERE c.account_id = ? AND d.id = ?",
                            (account_id, deadletter_id)).fetchone()
            if row is None:
                raise NotFound(f"dead letter {deadletter_id} not found")
            letter = _DEADLETTER.build(row)
            body = c.execute("SELECT body FROM events WHERE id = ?", (letter.event_id,)).fetchone()[0]
            return DeadLetterDetail(letter, bytes(body), _attempts(c, "batch_id = ?", (letter.batch_id,), 1000))

        return await self._read(run)

    async def replay_deadletters(self, account_id: str, ids: Sequence[int], now: float) -> list[str]:
        """Put dead jobs back to pending (same batch, so the same webhook-id); returns callbacks."""

        def run(c: Any) -> list[str]:
            if not ids:
                return []
            rows = c.execute(
                f"SELECT d.id, d.job_id, d.callback_id FROM deadletters d JOIN callbacks c "
                f"ON c.id = d.callback_id WHERE c.account_id = ? AND d.id IN ({marks(len(ids))})",
                (account_id, *ids),
            ).fetchall()
            c.executemany(
                "UPDATE jobs SET state = 'pending', next_attempt_at = ?, created_at = ?, "
                "finished_at = NULL WHERE id = ? AND state = 'dead'",
                [(now, now, job_id) for _, job_id, _ in rows],
            )
            c.executemany("DELETE FROM deadletters WHERE id = ?", [(row[0],) for row in rows])
            if rows:
                bump_counter(c, "requeue_version")
            return sorted({row[2] for row in rows})

        return await self._write(run)

    async def purge_deadletters(self, account_id: str, selection: DeadLetterFilter) -> int:
        where, params = _deadletter_filter(account_id, selection)

        def run(c: Any) -> int:
            ids = [row[0] for row in c.execute(f"SELECT d.id{_DEADLETTER_FROM} WHERE {where}", params)]
            c.executemany("DELETE FROM deadletters WHERE id = ?", [(i,) for i in ids])
            return len(ids)

        return await self._write(run)

    async def count_deadletters(self) -> int:
        row = await self._read(lambda c: c.execute("SELECT COUNT(*) FROM deadletters").fetchone())
        return int(row[0])

    # -- attempts and health --------------------------------------------------------------
    async def list_attempts(self, callback_id: str, outcome: str | None, after: int,
                            limit: int) -> list[AttemptRow]:
        where, params = "callback_id = ? AND id > ?", [callback_id, after]
        if outcome:
            where += " AND outcome = ?"
            params.append(outcome)
        return await self._read(lambda c: _attempts(c, where, tuple(params), limit))

    async def record_health_event(self, callback_id: str, kind: str, detail: str, at: float) -> None:
        await self._write(lambda c: c.execute(
            "INSERT INTO callback_history (callback_id, at, kind, detail) VALUES (?, ?, ?, ?)",
            (callback_id, at, kind, detail)))

    async def health_history(self, callback_id: str, limit: int) -> list[HealthEvent]:
        """Newest first."""
        rows = await self._read(lambda c: c.execute(
            "SELECT at, kind, detail FROM callback_history WHERE callback_id = ? ORDER BY id DESC LIMIT ?",
            (callback_id, limit)).fetchall())
        return [HealthEvent(*row) for row in rows]

    async def recent_attempts(self, callback_id: str, limit: int) -> list[AttemptRow]:
        """The callback's latest POSTs, newest first."""
        return await self._read(lambda c: _attempts(c, "callback_id = ?", (callback_id,), limit, newest=True))

    async def attempt_series(self, callback_id: str, since_ms: int, bucket_ms: int) -> list[AttemptBucket]:
        """The callback's POSTs per bucket and outcome, with their mean latency (success and speed over time)."""
        rows = await self._read(lambda c: c.execute(
            "SELECT (CAST(at * 1000 AS BIGINT) / ?) * ? AS bucket, outcome, COUNT(*), AVG(latency_ms) "
            "FROM attempts WHERE callback_id = ? AND at >= ? GROUP BY bucket, outcome ORDER BY bucket",
            (bucket_ms, bucket_ms, callback_id, since_ms / 1000),
        ).fetchall())
        return [AttemptBucket(int(b), outcome, int(n), float(avg or 0.0)) for b, outcome, n, avg in rows]

    async def callback_health(self, callback_id: str, since: float) -> CallbackHealth:
        def run(c: Any) -> CallbackHealth:
            total, ok, avg_latency = c.execute(
                "SELECT COUNT(*), SUM(CASE WHEN outcome = 'delivered' THEN 1 ELSE 0 END), AVG(latency_ms) "
                "FROM attempts WHERE callback_id = ? AND at >= ?", (callback_id, since)).fetchone()
            failures = _attempts(c, "callback_id = ? AND outcome != 'delivered'", (callback_id,), 1, newest=True)
            pending, oldest, next_retry = c.execute(
                "SELECT COUNT(*), MIN(created_at), MIN(CASE WHEN attempts > 0 THEN next_attempt_at END) "
                "FROM jobs WHERE callback_id = ? AND state = 'pending'", (callback_id,)).fetchone()
            dead = c.execute("SELECT COUNT(*) FROM deadletters WHERE callback_id = ?",
                             (callback_id,)).fetchone()[0]
            return CallbackHealth(attempts=total, delivered=ok or 0, average_latency_ms=avg_latency,
                                  pending=pending, oldest_pending_created_at=oldest, dead_letters=dead,
                                  last_failure=failures[0] if failures else None, next_retry_at=next_retry)

        return await self._read(run)

    # -- message status -------------------------------------------------------------------
    async def message_timeline(self, account_id: str, field: str, value: str,
                               limit: int) -> list[MessageEvent]:
        """The message's events in time order, each with its jobs (two queries, whatever the count)."""
        column = {"messageKey": "message_key", "subscriberKey": "subscriber_key"}[field]

        def run(c: Any) -> list[MessageEvent]:
            events = c.execute(
                f"SELECT id, type, timestamp_ms, body, traceparent FROM events WHERE account_id = ? AND {column} = ? "
                "ORDER BY timestamp_ms, id LIMIT ?", (account_id, value, limit)).fetchall()
            jobs: dict[str, list[JobState]] = {}
            if events:
                for row in c.execute(
                        f"SELECT e.id, {_JOB_STATE.sql} FROM jobs j JOIN events e ON e.seq = j.event_seq "
                        f"WHERE e.id IN ({marks(len(events))}) ORDER BY j.id",
                        [e[0] for e in events]).fetchall():
                    jobs.setdefault(row[0], []).append(_JOB_STATE.build(row[1:]))
            return [MessageEvent(event_id, kind, ts, bytes(body), tuple(jobs.get(event_id, ())), trace)
                    for event_id, kind, ts, body, trace in events]

        return await self._read(run)

    # -- recovery -------------------------------------------------------------------------
    async def count_routed(self, callback_id: str, since_ms: int, until_ms: int,
                           event_types: Sequence[str] | None) -> int:
        where, params = _routed_filter(callback_id, since_ms, until_ms, event_types)
        row = await self._read(lambda c: c.execute(
            f"SELECT COUNT(*) FROM jobs j JOIN events e ON e.seq = j.event_seq WHERE {where}", params).fetchone())
        return int(row[0])

    async def routed_page(self, callback_id: str, since_ms: int, until_ms: int, event_types: Sequence[str] | None,
                          after_job_id: int, limit: int) -> list[StoredDelivery]:
        """Events routed to the callback with an event time in [since, until), in job order (Kafka
        order per partition, so per-key order holds), whatever became of them."""
        where, params = _routed_filter(callback_id, since_ms, until_ms, event_types)
        rows = await self._read(lambda c: c.execute(
            f"SELECT {_STORED_DELIVERY.sql} FROM jobs j JOIN events e ON e.seq = j.event_seq "
            f"WHERE {where} AND j.id > ? ORDER BY j.id LIMIT ?", (*params, after_job_id, limit)).fetchall())
        return _STORED_DELIVERY.build_all(rows)

    # -- stats ----------------------------------------------------------------------------
    async def event_counts(self, account_id: str, since_ms: int, bucket_ms: int) -> list[EventCount]:
        """Events per type per bucket, for events newer than ``since_ms``."""
        rows = await self._read(lambda c: c.execute(
            "SELECT type, (timestamp_ms / ?) * ? AS bucket, COUNT(*) FROM events "
            "WHERE account_id = ? AND timestamp_ms >= ? GROUP BY type, bucket ORDER BY bucket",
            (bucket_ms, bucket_ms, account_id, since_ms),
        ).fetchall())
        return [EventCount(*row) for row in rows]

    async def attempt_counts(self, account_id: str, since_ms: int, bucket_ms: int) -> list[AttemptCount]:
        """Webhook POSTs per outcome (delivered, retry, dead) per bucket, newer than ``since_ms``."""
        rows = await self._read(lambda c: c.execute(
            "SELECT a.outcome, (CAST(a.at * 1000 AS BIGINT) / ?) * ? AS bucket, COUNT(*), SUM(a.job_count) "
            "FROM attempts a JOIN callbacks c ON c.id = a.callback_id WHERE c.account_id = ? AND a.at >= ? "
            "GROUP BY a.outcome, bucket ORDER BY bucket",
            (bucket_ms, bucket_ms, account_id, since_ms / 1000),
        ).fetchall())
        return [AttemptCount(outcome, int(bucket), int(n), int(events or 0)) for outcome, bucket, n, events in rows]

    # -- retention ------------------------------------------------------------------------
    async def purge_older_than(self, events_before: float, attempts_before: float,
                               deadletters_before: float, batch: int = 5000) -> dict[str, int]:
        """Delete old rows in small transactions so delivery never waits long for the writer."""

        def run(c: Any) -> dict[str, int]:
            attempts = c.execute(
                "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE at < ? LIMIT ?)",
                (attempts_before, batch)).rowcount
            attempts += c.execute(
                "DELETE FROM callback_history WHERE id IN (SELECT id FROM callback_history WHERE at < ? LIMIT ?)",
                (attempts_before, batch)).rowcount
            dead = c.execute(
                "DELETE FROM deadletters WHERE id IN (SELECT id FROM deadletters WHERE created_at < ? LIMIT ?)",
                (deadletters_before, batch)).rowcount
            jobs = c.execute(
                "DELETE FROM jobs WHERE id IN (SELECT j.id FROM jobs j JOIN events e ON e.seq = j.event_seq "
                "WHERE e.received_at < ? AND j.state IN ('delivered', 'dropped') LIMIT ?)",
                (events_before, batch)).rowcount
            events = c.execute(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.received_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_seq = e.seq) LIMIT ?)",
                (events_before, batch)).rowcount
            # A pin outlives its batch when no answer to a POST of it came: every job refused by a
            # transformation, or the batch pinned again under another id after its write was reported
            # failed. Its jobs were attempted since, so none would take it; it goes with the attempts.
            # (A batch left unanswered longer than that, by an instance down for as long, is composed
            # afresh and sent under a new webhook-id.)
            c.execute("DELETE FROM batch_pins WHERE batch_id IN "
                      "(SELECT batch_id FROM batch_pins WHERE created_at < ? LIMIT ?)", (attempts_before, batch))
            return {"attempts": attempts, "deadletters": dead, "jobs": jobs, "events": events}

        return await self._write(run)


def bump_counter(c: Any, key: str) -> None:
    """Instances poll these: ``registry_version`` (routing reloads) and ``requeue_version`` (jobs went
    back to pending outside ingest, so lanes reload)."""
    c.execute("UPDATE meta SET value = value + 1 WHERE key = ?", (key,))


def _attempts(c: Any, where: str, params: tuple[Any, ...], limit: int, newest: bool = False) -> list[AttemptRow]:
    order = "DESC" if newest else ""
    return _ATTEMPT.build_all(c.execute(
        f"SELECT {_ATTEMPT.sql} FROM attempts WHERE {where} ORDER BY id {order} LIMIT ?",
        (*params, limit)).fetchall())
