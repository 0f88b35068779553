"""The SQL every store runs: registry, ingest outbox, dispatch, in one dialect both SQLite and
PostgreSQL accept (``?`` placeholders, ``ON CONFLICT``, ``RETURNING``, a quoted ``"offset"``).

Each unit of work is one function that takes a DB-API connection and runs as one transaction on
a thread that owns that connection: one thread hop per transaction rather than one per
statement. Subclasses provide the connections and the transaction discipline (``_write``,
``_read``), and their migrations.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

import orjson

from relay.crypto import SecretBox
from relay.store.base import Conflict, NotFound, PreconditionFailed, RecordRejected, StoreUnavailable
from relay.store.bulk import Bulk
from relay.store.models import (
    Account,
    ApiKey,
    Callback,
    DeliveryOptions,
    DeliveryResult,
    EndpointAuth,
    IncomingEvent,
    Job,
    NewJob,
    QuarantinedRecord,
    SigningSecret,
    Subscription,
)
from relay.store.pins import PIN_COLUMNS, PinGroups, pin_rows, restore_pins
from relay.store.rows import Columns, RowShape
from relay.store.sql_durable import SqlDurableOperations
from relay.store.sql_ops import SqlOperations, bump_counter

T = TypeVar("T")
Partitions = Sequence[tuple[str, int]]


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Any: ...


class Connection(Protocol):
    """The slice of DB-API both sqlite3 and the PostgreSQL adapter provide."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, params: Sequence[Sequence[Any]], /) -> Any: ...


class SqlStore(SqlOperations, SqlDurableOperations):
    # What the driver raises when the data is refused, and when the store is out of reach:
    # told apart by exception class, never by message (see RecordRejected, StoreUnavailable).
    REJECTED_ERRORS: tuple[type[BaseException], ...] = ()
    UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = ()
    # A uniqueness or reference rule refused a write: the shared SQL turns it into ``Conflict``,
    # the one type callers see, whichever driver raised it.
    CONSTRAINT_ERRORS: tuple[type[BaseException], ...] = ()

    def __init__(self, box: SecretBox, bulk: Bulk) -> None:
        self._box = box
        self._bulk = bulk  # how many-row writes travel (see bulk.py)
        self._pins = PinGroups()

    async def start(self) -> None:
        """Open connections and apply pending migrations (each store its own way)."""
        raise NotImplementedError

    def _insert_events(self, c: Connection, events: Sequence[IncomingEvent], now: float) -> dict[str, int]:
        """The events this transaction added, id to ``seq`` (``RETURNING``): an id that exists
        already, or came earlier in the batch, is skipped."""
        return dict(self._bulk.insert_returning(c, "events", EVENT_COLUMNS, event_rows(events, now),
                                                f"{EVENT_CONFLICT} RETURNING id, seq"))

    def _insert_jobs(self, c: Connection, jobs: Sequence[NewJob], seqs: Mapping[str, int], now: float) -> list[Job]:
        """Only jobs that did not exist come back, with their ids (``RETURNING``)."""
        return pending_jobs(self._bulk.insert_returning(c, "jobs", JOB_COLUMNS, job_rows(jobs, seqs, now),
                                                        f"{JOB_CONFLICT} RETURNING {JOB_RETURNED}"))

    async def close(self) -> None:
        raise NotImplementedError

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction."""
        raise NotImplementedError

    async def _write_pipelined(self, fn: Callable[[Connection], T]) -> T:
        """``_write`` for the hot writes whose failure needs no diagnosis (pins and results: any
        error means "try again later") and whose ``fn`` never catches a statement's error to carry
        on: an engine may then report a failed statement late (when an outcome is read, or at the
        commit) in exchange for sending the transaction in one go (PostgreSQL: postgres.py)."""
        return await self._write(fn)

    async def _write_ingest(self, fn: Callable[[Connection], T]) -> T:
        """``_write`` for ingest's persist, which only ever adds rows and is awaited one at a time:
        an engine that can run two transactions at once may run it beside the other writes."""
        return await self._write(fn)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        raise NotImplementedError

    async def _read_rows(self, sql: str, params: Sequence[Any], columns: RowShape) -> list[Sequence[Any]]:
        """Every row of ``sql``, which selects ``columns`` in order: a listing the console asks for
        while the relay is busy. An engine may fetch it in fewer steps than one per row."""
        return await self._read(lambda c: c.execute(sql, params).fetchall())

    async def _read_bulk(self, fn: Callable[[Connection], T]) -> T:
        """A read the delivery engine makes hundreds of at once: every lane filling its window at
        start-up or after a rebalance. Engines keep them off the connection(s) the API reads on, so
        a console request does not queue behind them (it waited 1.7 s with 200 callbacks)."""
        return await self._read(fn)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    # -- registry -------------------------------------------------------------------------
    async def create_account(self, account: Account, key: ApiKey) -> None:
        def run(c: Connection) -> None:
            try:
                c.execute(
                    "INSERT INTO accounts (id, name, mid, created_at) VALUES (?, ?, ?, ?)",
                    (account.id, account.name, account.mid, account.created_at),
                )
            except self.CONSTRAINT_ERRORS:
                raise Conflict(f"an account with mid {account.mid} already exists") from None
            _insert_key(c, key)
            _bump_version(c)

        await self._write(run)

    async def create_api_key(self, key: ApiKey) -> None:
        await self._write(lambda c: _insert_key(c, key))

    async def list_api_keys(self, account_id: str) -> list[ApiKey]:
        rows = await self._read(lambda c: c.execute(
            f"SELECT {_API_KEY.sql} FROM api_keys WHERE account_id = ? ORDER BY created_at",
            (account_id,),
        ).fetchall())
        return _API_KEY.build_all(rows)

    async def revoke_api_key(self, account_id: str, key_id: str, now: float) -> None:
        def run(c: Connection) -> None:
            cursor = c.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) "
                "WHERE id = ? AND account_id = ?",
                (now, key_id, account_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"api key {key_id} not found")

        await self._write(run)

    async def account_for_key(self, api_key_hash: str) -> Account | None:
        row = await self._read(
            lambda c: c.execute(
                f"SELECT {_ACCOUNT_OF_KEY.sql} FROM api_keys k "
                "JOIN accounts a ON a.id = k.account_id "
                "WHERE k.key_hash = ? AND k.revoked_at IS NULL",
                (api_key_hash,),
            ).fetchone()
        )
        return _ACCOUNT_OF_KEY.build(row) if row else None

    async def get_account(self, account_id: str) -> Account:
        row = await self._read(
            lambda c: c.execute(
                f"SELECT {_ACCOUNT.sql} FROM accounts WHERE id = ?", (account_id,)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"account {account_id} not found")
        return _ACCOUNT.build(row)

    async def list_accounts(self) -> list[Account]:
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_ACCOUNT.sql} FROM accounts ORDER BY created_at"
            ).fetchall()
        )
        return _ACCOUNT.build_all(rows)

    def _seal_secrets(self, callback_id: str, secrets: Sequence[SigningSecret]) -> bytes:
        plain = orjson.dumps(
            [{"s": s.secret, "c": s.created_at, "e": s.expires_at} for s in secrets]
        )
        return self._box.seal(plain, context=callback_id.encode())

    def _open_secrets(self, callback_id: str, sealed: bytes) -> tuple[SigningSecret, ...]:
        items = orjson.loads(self._box.open(sealed, context=callback_id.encode()))
        return tuple(SigningSecret(i["s"], i["c"], i["e"]) for i in items)

    def _seal_auth(self, callback_id: str, auth: EndpointAuth) -> bytes | None:
        if not auth.configured:
            return None
        return self._box.seal(orjson.dumps(auth.stored()), context=f"auth:{callback_id}".encode())

    def _open_auth(self, callback_id: str, sealed: bytes | None) -> EndpointAuth:
        if sealed is None:
            return EndpointAuth()
        plain = self._box.open(bytes(sealed), context=f"auth:{callback_id}".encode())
        return EndpointAuth.from_stored(orjson.loads(plain))

    async def create_callback(self, callback: Callback) -> None:
        sealed = self._seal_secrets(callback.id, callback.secrets)

        def run(c: Connection) -> None:
            c.execute(
                "INSERT INTO callbacks (id, account_id, name, url, max_batch_size, secrets, "
                "verified, enabled, disabled_reason, ens_signature, created_at, delivery_options, "
                "failing_since, auth) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    callback.id, callback.account_id, callback.name, callback.url,
                    callback.max_batch_size, sealed, int(callback.verified),
                    int(callback.enabled), callback.disabled_reason,
                    int(callback.ens_signature), callback.created_at,
                    orjson.dumps(callback.options.stored()), callback.failing_since,
                    self._seal_auth(callback.id, callback.auth),
                ),
            )
            _bump_version(c)

        await self._write(run)

    def _callback(self, row: Any) -> Callback:
        r = dict(zip(_CALLBACK_FIELDS, row, strict=True))
        return Callback(
            id=r["id"], account_id=r["account_id"], name=r["name"], url=r["url"],
            max_batch_size=r["max_batch_size"], secrets=self._open_secrets(r["id"], r["secrets"]),
            verified=bool(r["verified"]), enabled=bool(r["enabled"]), disabled_reason=r["disabled_reason"],
            ens_signature=bool(r["ens_signature"]), created_at=r["created_at"],
            options=DeliveryOptions.from_stored(orjson.loads(r["delivery_options"])),
            failing_since=r["failing_since"], throttled_until=r["throttled_until"], version=r["version"],
            auth=self._open_auth(r["id"], r["auth"]),
        )

    async def get_callback(self, callback_id: str, account_id: str | None = None) -> Callback:
        sql = f"SELECT {_CALLBACK_COLUMNS} FROM callbacks WHERE id = ?"
        params: tuple[Any, ...] = (callback_id,)
        if account_id is not None:
            sql += " AND account_id = ?"
            params += (account_id,)
        row = await self._read(lambda c: c.execute(sql, params).fetchone())
        if row is None:
            raise NotFound(f"callback {callback_id} not found")
        return self._callback(row)

    async def list_callbacks(self, account_id: str | None = None) -> list[Callback]:
        sql = f"SELECT {_CALLBACK_COLUMNS} FROM callbacks"
        params: tuple[Any, ...] = ()
        if account_id is not None:
            sql += " WHERE account_id = ?"
            params = (account_id,)
        rows = await self._read_rows(sql, params, _CALLBACK_SHAPE)
        return sorted((self._callback(row) for row in rows), key=lambda callback: callback.created_at)

    async def update_callback(self, callback: Callback, fields: Collection[str],
                              expected_version: int | None = None) -> int:
        """Write only the named fields, so a relay-side change (disabled after a 410) made since
        the caller's read is never overwritten by values it did not mean to change."""
        columns = {
            "name": lambda cb: cb.name, "url": lambda cb: cb.url, "max_batch_size": lambda cb: cb.max_batch_size,
            "secrets": lambda cb: self._seal_secrets(cb.id, cb.secrets), "verified": lambda cb: int(cb.verified),
            "enabled": lambda cb: int(cb.enabled), "disabled_reason": lambda cb: cb.disabled_reason,
            "ens_signature": lambda cb: int(cb.ens_signature),
            "options": lambda cb: orjson.dumps(cb.options.stored()),
            "auth": lambda cb: self._seal_auth(cb.id, cb.auth),
        }
        unknown = set(fields) - set(columns)
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        names = sorted(fields)
        assignments = "".join(f"{'delivery_options' if n == 'options' else n} = ?, " for n in names)
        values = [columns[n](callback) for n in names]

        def run(c: Connection) -> int:
            row = c.execute("SELECT version FROM callbacks WHERE id = ? AND account_id = ?",
                            (callback.id, callback.account_id)).fetchone()
            if row is None:
                raise NotFound(f"callback {callback.id} not found")
            if expected_version is not None and row[0] != expected_version:
                raise PreconditionFailed(f"callback {callback.id} is at version {row[0]}, not {expected_version}")
            c.execute(f"UPDATE callbacks SET {assignments}version = version + 1 WHERE id = ?",
                      (*values, callback.id))
            _bump_version(c)
            return int(row[0]) + 1

        return await self._write(run)

    async def delete_callback(self, callback_id: str, account_id: str) -> None:
        def run(c: Connection) -> None:
            owned = c.execute(
                "SELECT 1 FROM callbacks WHERE id = ? AND account_id = ?", (callback_id, account_id)
            ).fetchone()
            if owned is None:
                raise NotFound(f"callback {callback_id} not found")
            used = c.execute(
                "SELECT COUNT(*) FROM subscriptions WHERE callback_id = ?", (callback_id,)
            ).fetchone()[0]
            if used:
                raise Conflict(f"callback {callback_id} is used by {used} subscription(s)")
            c.execute("DELETE FROM callbacks WHERE id = ?", (callback_id,))
            c.execute("DELETE FROM jobs WHERE callback_id = ? AND state IN ('pending', 'held')",
                      (callback_id,))
            c.execute("DELETE FROM batch_pins WHERE callback_id = ?", (callback_id,))
            _bump_version(c)

        await self._write(run)

    async def set_failing_since(self, callback_id: str, since: float | None) -> None:
        """Not a registry change: routing does not need to reload for it."""
        await self._write(lambda c: c.execute(
            "UPDATE callbacks SET failing_since = ? WHERE id = ?", (since, callback_id)
        ))

    async def set_throttled_until(self, callback_id: str, until: float) -> bool:
        """Only ever later (by a second at least, so a storm of 429s writes rarely); a change reloads
        routing everywhere (it carries the callbacks), so the pause reaches every instance within a
        refresh. False when it was not later."""

        def run(c: Connection) -> bool:
            changed = c.execute(
                "UPDATE callbacks SET throttled_until = ? WHERE id = ? "
                "AND (throttled_until IS NULL OR throttled_until < ?)", (until, callback_id, until - 1.0)).rowcount
            if changed:
                _bump_version(c)
            return bool(changed)

        return await self._write(run)

    async def assign_batch(self, batch_id: str, callback_id: str, job_ids: Sequence[int]) -> None:
        """Pin a batch's composition before its first POST, so a crash re-sends the same
        ``webhook-id``. Pins that wait for the writer together are written together (pins.py)."""
        group, first = self._pins.join((batch_id, callback_id, job_ids))
        if not first:
            await asyncio.shield(group.written)  # a cancelled pin must not cancel its group's outcome
            return

        def run(c: Connection) -> None:
            # The same composition pinned again has the same id (webhook_id hashes it): nothing to add.
            self._bulk.insert(c, "batch_pins", PIN_COLUMNS, pin_rows(self._pins.take(group), time.time()),
                              "ON CONFLICT (batch_id) DO NOTHING")

        try:
            await self._write_pipelined(run)
        except BaseException as exc:
            self._pins.done(group, exc)
            raise
        self._pins.done(group, None)

    async def set_callback_enabled(
        self, callback_id: str, enabled: bool, reason: str | None
    ) -> None:
        def run(c: Connection) -> None:
            c.execute(
                "UPDATE callbacks SET enabled = ?, disabled_reason = ?, version = version + 1 WHERE id = ?",
                (int(enabled), None if enabled else reason, callback_id),
            )
            _bump_version(c)

        await self._write(run)

    async def set_verification(self, callback_id: str, key_hash: str, expires_at: float) -> None:
        await self._write(lambda c: c.execute(
            "UPDATE callbacks SET verification_hash = ?, verification_expires_at = ? WHERE id = ?",
            (key_hash, expires_at, callback_id),
        ))

    async def mark_verified(self, callback_id: str) -> None:
        def run(c: Connection) -> None:
            c.execute("UPDATE callbacks SET verified = 1, verification_hash = NULL, verification_expires_at = NULL, "
                      "version = version + 1 WHERE id = ?", (callback_id,))
            _bump_version(c)

        await self._write(run)

    async def confirm_verification(
        self, callback_id: str, account_id: str, key_hash: str, now: float
    ) -> str:
        """'verified', 'already', 'mismatch' or 'expired'. A key works once."""

        def run(c: Connection) -> str:
            row = c.execute(
                "SELECT verified, verification_hash, verification_expires_at FROM callbacks "
                "WHERE id = ? AND account_id = ?",
                (callback_id, account_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"callback {callback_id} not found")
            verified, expected, expires_at = row
            if expected is None:
                return "already" if verified else "mismatch"
            if not hmac.compare_digest(expected, key_hash):
                return "mismatch"
            if expires_at is not None and expires_at < now:
                return "expired"
            c.execute(
                "UPDATE callbacks SET verified = 1, verification_hash = NULL, "
                "verification_expires_at = NULL WHERE id = ?",
                (callback_id,),
            )
            _bump_version(c)
            return "verified"

        return await self._write(run)

    async def create_subscription(self, subscription: Subscription) -> None:
        s = subscription

        def run(c: Connection) -> None:
            _check_callback_room(c, s)
            try:
                c.execute(
                    "INSERT INTO subscriptions (id, account_id, name, callback_id, event_types, "
                    "filters, status, status_reason, ordering, on_pause, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        s.id, s.account_id, s.name, s.callback_id, orjson.dumps(s.event_types),
                        orjson.dumps(s.filters), s.status, s.status_reason, s.ordering,
                        s.on_pause, s.created_at,
                    ),
                )
            except self.CONSTRAINT_ERRORS:
                raise Conflict(f"a subscription named {s.name!r} already exists") from None
            _bump_version(c)

        await self._write(run)

    async def update_subscription(self, subscription: Subscription) -> None:
        s = subscription

        def run(c: Connection) -> None:
            _check_callback_room(c, s)
            try:
                cursor = c.execute(
                    "UPDATE subscriptions SET name = ?, callback_id = ?, event_types = ?, "
                    "filters = ?, status = ?, status_reason = ?, ordering = ?, on_pause = ? "
                    "WHERE id = ? AND account_id = ?",
                    (
                        s.name, s.callback_id, orjson.dumps(s.event_types),
                        orjson.dumps(s.filters), s.status, s.status_reason, s.ordering,
                        s.on_pause, s.id, s.account_id,
                    ),
                )
            except self.CONSTRAINT_ERRORS:
                raise Conflict(f"a subscription named {s.name!r} already exists") from None
            if cursor.rowcount == 0:
                raise NotFound(f"subscription {s.id} not found")
            _bump_version(c)

        await self._write(run)

    async def delete_subscription(self, subscription_id: str, account_id: str) -> None:
        def run(c: Connection) -> None:
            cursor = c.execute(
                "DELETE FROM subscriptions WHERE id = ? AND account_id = ?",
                (subscription_id, account_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"subscription {subscription_id} not found")
            c.execute("UPDATE jobs SET state = 'dropped' WHERE state = 'held' AND held_by = ?",
                      (subscription_id,))
            _bump_version(c)

        await self._write(run)

    async def release_held(self, subscription_id: str) -> list[str]:
        """Held jobs of a resumed subscription become pending; returns their callbacks."""

        def run(c: Connection) -> list[str]:
            rows = c.execute(
                "UPDATE jobs SET state = 'pending', held_by = NULL "
                "WHERE state = 'held' AND held_by = ? RETURNING callback_id",
                (subscription_id,),
            ).fetchall()
            if rows:
                bump_counter(c, "requeue_version")
            return sorted({row[0] for row in rows})

        return await self._write(run)

    @staticmethod
    def _subscription(row: Any) -> Subscription:
        r = dict(zip(_SUBSCRIPTION_FIELDS, row, strict=True))
        return Subscription(
            id=r["id"], account_id=r["account_id"], name=r["name"], callback_id=r["callback_id"],
            event_types=tuple(orjson.loads(r["event_types"])), filters=tuple(orjson.loads(r["filters"])),
            status=r["status"], status_reason=r["status_reason"], ordering=r["ordering"],
            created_at=r["created_at"], on_pause=r["on_pause"],
        )

    async def get_subscription(self, subscription_id: str, account_id: str) -> Subscription:
        row = await self._read(lambda c: c.execute(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ? AND account_id = ?",
            (subscription_id, account_id),
        ).fetchone())
        if row is None:
            raise NotFound(f"subscription {subscription_id} not found")
        return self._subscription(row)

    async def list_subscriptions(self, account_id: str | None = None) -> list[Subscription]:
        sql = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions"
        params: tuple[Any, ...] = ()
        if account_id is not None:
            sql += " WHERE account_id = ?"
            params = (account_id,)
        rows = await self._read_rows(sql, params, _SUBSCRIPTION_SHAPE)
        return sorted((self._subscription(r) for r in rows), key=lambda subscription: subscription.created_at)

    async def registry_version(self) -> int:
        return await self._counter("registry_version")

    async def requeue_version(self) -> int:
        return await self._counter("requeue_version")

    async def _counter(self, key: str) -> int:
        row = await self._read(lambda c: c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone())
        return int(row[0]) if row else 0

    # -- ingest ---------------------------------------------------------------------------
    async def hashed_event_ids(self) -> dict[tuple[str, int], int]:
        rows = await self._read(lambda c: c.execute(
            "SELECT topic, partition, last_offset FROM hashed_event_ids").fetchall())
        return {(topic, int(partition)): int(last) for topic, partition, last in rows}

    async def persist_batch(
        self,
        events: Sequence[IncomingEvent],
        jobs: Sequence[NewJob],
        quarantined: Sequence[QuarantinedRecord],
    ) -> list[Job]:
        now = time.time()

        def run(c: Connection) -> list[Job]:
            added = self._insert_events(c, events, now) if events else {}
            if quarantined:
                self._bulk.insert(
                    c, "quarantine",
                    ("topic", "partition", "offset", "reason", "detail", "raw", "key", "at", "account_id"),
                    [
                        (q.topic, q.partition, q.offset, q.reason, q.detail, q.raw, q.key, q.at, q.account_id)
                        for q in quarantined
                    ],
                    'ON CONFLICT (topic, partition, "offset") DO NOTHING',
                )
            # An event that was there already (its record read again) got its jobs when it was added.
            return self._insert_jobs(c, [job for job in jobs if job.event_id in added], added, now)

        try:
            # Not pipelined: a refused record must raise its own error to be told from an outage
            # (a pipeline may report it as "aborted", an OperationalError).
            inserted = await self._write_ingest(run)
        except self.REJECTED_ERRORS as exc:
            raise RecordRejected(f"{type(exc).__name__}: {exc}") from exc
        except self.UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        by_id = {i.event.id: i for i in reversed(events)}  # the first of an id is the one stored
        for job in inserted:
            incoming = by_id[job.event_id]
            job.body = incoming.event.body
            job.event_timestamp_ms = incoming.event.timestamp_ms
            job.traceparent = incoming.traceparent
        return inserted

    async def list_quarantine(self, limit: int = 100) -> list[QuarantinedRecord]:
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_QUARANTINE.sql} FROM quarantine ORDER BY id DESC LIMIT ?", (limit,),
            ).fetchall()
        )
        return _QUARANTINE.build_all(rows)

    async def account_quarantine(self, account_id: str, before_id: int | None, limit: int) -> list[QuarantinedRecord]:
        """The account's quarantined records, newest first (``before_id`` pages back)."""
        rows = await self._read(lambda c: c.execute(
            f"SELECT {_QUARANTINE.sql} FROM quarantine WHERE account_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (account_id, before_id if before_id is not None else 2**62, limit),
        ).fetchall())
        return _QUARANTINE.build_all(rows)

    async def unpublished_quarantine(self, limit: int) -> list[QuarantinedRecord]:
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT {_QUARANTINE.sql} FROM quarantine WHERE published_at IS NULL "
                "ORDER BY id LIMIT ?", (limit,),
            ).fetchall()
        )
        return _QUARANTINE.build_all(rows)

    async def mark_quarantine_published(self, ids: Sequence[int], at: float) -> None:
        await self._write(lambda c: c.executemany(
            "UPDATE quarantine SET published_at = ? WHERE id = ?", [(at, i) for i in ids]))

    # -- dispatch -------------------------------------------------------------------------
    async def callbacks_with_pending(self, partitions: Partitions | None = None) -> list[str]:
        where, params = _owned("", partitions)
        rows = await self._read(lambda c: c.execute(
            f"SELECT DISTINCT callback_id FROM jobs WHERE state = 'pending'{where}", params
        ).fetchall())
        return [row[0] for row in rows]

    async def load_pending(self, callback_id: str, after_id: int, limit: int,
                           partitions: Partitions | None = None) -> list[Job]:
        where, params = _owned("j.", partitions)

        def run(c: Connection) -> list[Job]:
            jobs = _JOB.build_all(c.execute(
                f"SELECT {_JOB.sql} FROM jobs j JOIN events e ON e.seq = j.event_seq "
                f"WHERE j.callback_id = ? AND j.state = 'pending' AND j.id > ?{where} "
                "ORDER BY j.id LIMIT ?",
                (callback_id, after_id, *params, limit),
            ).fetchall())
            # Pinned before a crash or a rebalance, and never answered.
            restore_pins(jobs, lambda low, high: c.execute(
                "SELECT batch_id, job_ids FROM batch_pins WHERE callback_id = ? AND last_job_id >= ? "
                "AND first_job_id <= ? ORDER BY created_at", (callback_id, low, high)).fetchall())
            return jobs

        return await self._read_bulk(run)

    async def record_results(self, results: Sequence[DeliveryResult]) -> None:
        if not results:
            return
        now = time.time()

        def run(c: Connection) -> None:
            self._bulk.insert(
                c, "attempts",
                ("batch_id", "callback_id", "job_count", "at", "status", "latency_ms", "error", "response_excerpt",
                 "outcome"),
                [
                    (
                        r.attempt.batch_id, r.attempt.callback_id, len(r.attempt.job_ids),
                        r.attempt.at, r.attempt.status, r.attempt.latency_ms, r.attempt.error,
                        r.attempt.response_excerpt, r.outcome,
                    )
                    for r in results
                ],
            )
            delivered: list[tuple[int, str]] = []
            retry: list[tuple[int, str, float]] = []
            dead: list[tuple[int, str]] = []
            for r in results:
                batch_id = r.attempt.batch_id
                if r.outcome == "delivered":
                    delivered += [(job_id, batch_id) for job_id in r.attempt.job_ids]
                elif r.outcome == "retry":
                    retry += [(job_id, batch_id, r.next_attempt_at) for job_id in r.attempt.job_ids]
                else:
                    dead += [(job_id, batch_id) for job_id in r.attempt.job_ids]
            self._bulk.update(c, "v", ("id", "batch_id"), delivered,
                              "UPDATE jobs SET state = 'delivered', batch_id = v.batch_id, attempts = attempts + 1, "
                              "finished_at = ? FROM v WHERE jobs.id = v.id", (now,))
            self._bulk.update(c, "v", ("id", "batch_id", "next_attempt_at"), retry,
                              "UPDATE jobs SET batch_id = v.batch_id, attempts = attempts + 1, "
                              "next_attempt_at = v.next_attempt_at FROM v WHERE jobs.id = v.id")
            self._bulk.update(c, "v", ("id", "batch_id"), dead,
                              "UPDATE jobs SET state = 'dead', batch_id = v.batch_id, attempts = attempts + 1, "
                              "finished_at = ? FROM v WHERE jobs.id = v.id", (now,))
            # The jobs hold their batch id now; a refused job's result is not the batch's.
            self._bulk.update(c, "v", ("batch_id",), sorted({(r.attempt.batch_id,) for r in results if r.ends_pin}),
                              "DELETE FROM batch_pins WHERE batch_id IN (SELECT batch_id FROM v)")
            # One row per job (the last result wins): one statement may not update a row twice.
            dead_letters = {job_id: (job_id, r.attempt.batch_id, r.attempt.callback_id, r.reason, now)
                            for r in results if r.outcome == "dead" for job_id in r.attempt.job_ids}
            self._bulk.insert(
                c, "deadletters", ("job_id", "batch_id", "callback_id", "reason", "created_at"),
                list(dead_letters.values()),
                "ON CONFLICT (job_id) DO UPDATE SET batch_id = excluded.batch_id, reason = excluded.reason, "
                "created_at = excluded.created_at",
            )

        await self._write_pipelined(run)

    async def count_jobs(self, state: str | None = None) -> int:
        sql, params = "SELECT COUNT(*) FROM jobs", cast(tuple[Any, ...], ())
        if state is not None:
            sql, params = sql + " WHERE state = ?", (state,)
        row = await self._read(lambda c: c.execute(sql, params).fetchone())
        return int(row[0])


_CALLBACK_FIELDS = ("id", "account_id", "name", "url", "max_batch_size", "secrets", "verified", "enabled",
                    "disabled_reason", "ens_signature", "created_at", "delivery_options", "failing_since", "version",
                    "throttled_until", "auth")
_CALLBACK_COLUMNS = ", ".join(_CALLBACK_FIELDS)
_CALLBACK_SHAPE = RowShape(_CALLBACK_FIELDS, reals={"created_at", "failing_since", "throttled_until"},
                           blobs={"secrets", "auth", "delivery_options"})
_SUBSCRIPTION_FIELDS = ("id", "account_id", "name", "callback_id", "event_types", "filters", "status",
                        "status_reason", "ordering", "created_at", "on_pause")
_SUBSCRIPTION_COLUMNS = ", ".join(_SUBSCRIPTION_FIELDS)
_SUBSCRIPTION_SHAPE = RowShape(_SUBSCRIPTION_FIELDS, reals={"created_at"}, blobs={"event_types", "filters"})
_API_KEY = Columns(ApiKey, "id", "account_id", "key_hash", "prefix", "name", "created_at", "revoked_at")
_ACCOUNT = Columns(Account, "id", "name", "mid", "created_at")
_ACCOUNT_OF_KEY = Columns(Account, id="a.id", name="a.name", mid="a.mid", created_at="a.created_at")
_QUARANTINE = Columns(QuarantinedRecord, "topic", "partition", "offset", "reason", "detail", "raw", "key", "at",
                      "id", "published_at", "account_id")
_JOB = Columns(
    Job, id="j.id", event_id="j.event_id", callback_id="j.callback_id", ordering_key="j.ordering_key",
    body="e.body", created_at="j.created_at", attempts="j.attempts", next_attempt_at="j.next_attempt_at",
    batch_id="j.batch_id", event_timestamp_ms="e.timestamp_ms", topic="j.topic", partition="j.partition",
    traceparent="e.traceparent",
)
MAX_SUBSCRIPTIONS_PER_CALLBACK = 200


def _insert_key(c: Connection, key: ApiKey) -> None:
    c.execute(
        f"INSERT INTO api_keys ({_API_KEY.sql}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key.id, key.account_id, key.key_hash, key.prefix, key.name, key.created_at,
         key.revoked_at),
    )


def _check_callback_room(c: Connection, s: Subscription) -> None:
    """The callback must belong to the account and carry fewer than 200 other subscriptions."""
    owner = c.execute("SELECT account_id FROM callbacks WHERE id = ?", (s.callback_id,)).fetchone()
    if owner is None or owner[0] != s.account_id:
        raise NotFound(f"callback {s.callback_id} not found")
    others = c.execute(
        "SELECT COUNT(*) FROM subscriptions WHERE callback_id = ? AND id != ?",
        (s.callback_id, s.id),
    ).fetchone()[0]
    if others >= MAX_SUBSCRIPTIONS_PER_CALLBACK:
        raise Conflict(f"callback {s.callback_id} already has {MAX_SUBSCRIPTIONS_PER_CALLBACK} subscriptions")


def _owned(prefix: str, partitions: Partitions | None) -> tuple[str, tuple[Any, ...]]:
    """A filter to the partitions this instance owns; ``None`` means all of them."""
    if partitions is None:
        return "", ()
    if not partitions:
        return " AND 1 = 0", ()
    rows = ", ".join(["(?, ?)"] * len(partitions))
    return (f" AND ({prefix}topic, {prefix}partition) IN (VALUES {rows})",
            tuple(v for tp in partitions for v in tp))


def _bump_version(c: Connection) -> None:
    bump_counter(c, "registry_version")


EVENT_COLUMNS = ("id", "account_id", "type", "mid", "timestamp_ms", "subscriber_key", "message_key", "body",
                 "topic", "partition", "offset", "received_at", "traceparent")
EVENT_CONFLICT = "ON CONFLICT (id) DO NOTHING"
JOB_COLUMNS = ("event_seq", "event_id", "callback_id", "ordering_key", "topic", "partition", "next_attempt_at",
               "created_at", "state", "held_by")
JOB_CONFLICT = "ON CONFLICT (event_seq, callback_id) DO NOTHING"
# What pending_jobs reads back: by RETURNING, or by a SELECT where RETURNING is too costly.
JOB_RETURNED = "id, event_id, callback_id, ordering_key, created_at, state, topic, partition"


def event_rows(events: Sequence[IncomingEvent], now: float) -> list[tuple[Any, ...]]:
    return [(i.event.id, i.account_id, i.event.type, i.event.mid, i.event.timestamp_ms, i.event.subscriber_key,
             i.event.message_key, i.event.body, i.topic, i.partition, i.offset, now, i.traceparent) for i in events]


def job_rows(jobs: Sequence[NewJob], seqs: Mapping[str, int], now: float) -> list[tuple[Any, ...]]:
    """Rows in ``JOB_COLUMNS`` order; ``seqs`` holds each job's event ``seq`` by event id."""
    return [(seqs[job.event_id], job.event_id, job.callback_id, job.ordering_key, job.topic, job.partition, now, now,
             "pending" if job.held_by is None else "held", job.held_by) for job in jobs]


def pending_jobs(rows: Sequence[Any]) -> list[Job]:
    """Jobs from ``JOB_RETURNED`` rows: the pending ones (held jobs wait for a resume), by id."""
    jobs = [Job(r[0], r[1], r[2], r[3], b"", r[4], 0, r[4], topic=r[6], partition=r[7])
            for r in rows if r[5] == "pending"]
    jobs.sort(key=lambda j: j.id)
    return jobs
