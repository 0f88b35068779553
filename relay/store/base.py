"""The one interface every store implements (SQLite for one instance, PostgreSQL for several).

Methods are grouped by who calls them: the registry (API), ingest (one transaction per consumed
batch), and the dispatcher (pending jobs in, grouped delivery results out).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from relay.store.models import (
    Account,
    ApiKey,
    Callback,
    DeliveryResult,
    IncomingEvent,
    Job,
    NewJob,
    Operation,
    QuarantinedRecord,
    Subscription,
)
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
    MessageEvent,
    StoredDelivery,
)


class NotFound(LookupError):
    pass


class Conflict(Exception):
    """A uniqueness or reference rule would be broken (maps to HTTP 409)."""


class PreconditionFailed(Exception):
    """The row changed since the version the caller read (maps to HTTP 412)."""


class StoreError(Exception):
    """A write the store could not make; the subclass says whether trying again can help."""


class RecordRejected(StoreError):
    """The data itself was refused (a constraint, an encoding, a value out of range): the same
    rows will fail again, so ingest isolates the records responsible and quarantines them."""


class StoreUnavailable(StoreError):
    """The store could not be reached or could not write now (connection lost, restarting,
    disk full, lock timeout): the same write may succeed later, so ingest retries it."""


class Store(Protocol):
    async def start(self) -> None:
        """Open connections and apply pending migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot answer (readiness)."""

    # -- registry -------------------------------------------------------------------------
    async def create_account(self, account: Account, key: ApiKey) -> None: ...

    async def create_api_key(self, key: ApiKey) -> None: ...

    async def list_api_keys(self, account_id: str) -> list[ApiKey]: ...

    async def revoke_api_key(self, account_id: str, key_id: str, now: float) -> None: ...

    async def account_for_key(self, api_key_hash: str) -> Account | None: ...

    async def get_account(self, account_id: str) -> Account: ...

    async def list_accounts(self) -> list[Account]: ...

    async def create_callback(self, callback: Callback) -> None: ...

    async def get_callback(self, callback_id: str, account_id: str | None = None) -> Callback: ...

    async def list_callbacks(self, account_id: str | None = None) -> list[Callback]: ...

    async def update_callback(self, callback: Callback, fields: Collection[str],
                              expected_version: int | None = None) -> int:
        """Write only ``fields`` (attribute names of Callback) and return the new version. With
        ``expected_version``, PreconditionFailed when the row has moved on since then."""

    async def delete_callback(self, callback_id: str, account_id: str) -> None:
        """Conflict while subscriptions use it."""

    async def set_verification(self, callback_id: str, key_hash: str, expires_at: float) -> None:
        ...

    async def mark_verified(self, callback_id: str) -> None:
        """Ownership proved another way (the CloudEvents validation handshake)."""

    async def confirm_verification(
        self, callback_id: str, account_id: str, key_hash: str, now: float
    ) -> str:
        """'verified', 'already', 'mismatch' or 'expired'. A key works once."""

    async def create_subscription(self, subscription: Subscription) -> None: ...

    async def list_subscriptions(self, account_id: str | None = None) -> list[Subscription]: ...

    async def get_subscription(self, subscription_id: str, account_id: str) -> Subscription: ...

    async def update_subscription(self, subscription: Subscription) -> None: ...

    async def delete_subscription(self, subscription_id: str, account_id: str) -> None: ...

    async def release_held(self, subscription_id: str) -> list[str]:
        """Held jobs of a resumed subscription become pending; returns their callbacks."""

    async def registry_version(self) -> int:
        """Grows on every registry change, so routing can reload only when needed."""

    # -- ingest ---------------------------------------------------------------------------
    async def hashed_event_ids(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition), the last offset whose event id is the digest of its coordinates
        (stored before ids were made in offset order): see ``relay.events.event_id_for``."""
        ...

    async def persist_batch(
        self,
        events: Sequence[IncomingEvent],
        jobs: Sequence[NewJob],
        quarantined: Sequence[QuarantinedRecord],
    ) -> list[Job]:
        """Write a consumed batch in one transaction; return only the jobs that are new.

        ``events`` holds (event, account_id, topic, partition, offset). Re-persisting a batch
        (after a crash or rebalance) creates nothing twice, quarantine rows included. Raises
        RecordRejected or StoreUnavailable, and nothing is written then.
        """

    async def list_quarantine(self, limit: int = 100) -> list[QuarantinedRecord]: ...

    async def account_quarantine(self, account_id: str, before_id: int | None,
                                 limit: int) -> list[QuarantinedRecord]: ...

    async def unpublished_quarantine(self, limit: int) -> list[QuarantinedRecord]:
        """Quarantine rows not yet on the quarantine topic, oldest first (the topic's outbox)."""

    async def mark_quarantine_published(self, ids: Sequence[int], at: float) -> None: ...

    # -- dispatch -------------------------------------------------------------------------
    async def callbacks_with_pending(self, partitions: Sequence[tuple[str, int]] | None = None) -> list[str]:
        """Callbacks with pending jobs from these (topic, partition)s; ``None``: from any."""

    async def load_pending(self, callback_id: str, after_id: int, limit: int,
                           partitions: Sequence[tuple[str, int]] | None = None) -> list[Job]:
        """Pending jobs in id order, from these (topic, partition)s; ``None``: from any."""

    async def requeue_version(self) -> int:
        """Grows whenever jobs go back to pending outside ingest (replay, resumed subscription)."""

    async def record_results(self, results: Sequence[DeliveryResult]) -> None:
        """Write a group of attempt outcomes in one transaction."""

    async def set_failing_since(self, callback_id: str, since: float | None) -> None: ...

    async def set_throttled_until(self, callback_id: str, until: float) -> bool: ...

    async def assign_batch(self, batch_id: str, callback_id: str, job_ids: Sequence[int]) -> None:
        """Pin a batch's composition before its first POST (stable webhook-id after a crash)."""

    async def set_callback_enabled(
        self, callback_id: str, enabled: bool, reason: str | None
    ) -> None: ...

    # -- operations (dead letters, attempts, message status, stats, retention) ------------
    async def list_deadletters_page(self, account_id: str, selection: DeadLetterFilter, after: int,
                                    limit: int) -> list[DeadLetter]: ...

    async def get_deadletter(self, account_id: str, deadletter_id: int) -> DeadLetterDetail: ...

    async def replay_deadletters(self, account_id: str, ids: Sequence[int], now: float) -> list[str]:
        """Dead jobs back to pending with the same batch (same webhook-id); returns callbacks."""

    async def purge_deadletters(self, account_id: str, selection: DeadLetterFilter) -> int: ...

    async def count_deadletters(self) -> int: ...

    async def list_attempts(self, callback_id: str, outcome: str | None, after: int,
                            limit: int) -> list[AttemptRow]: ...

    async def record_health_event(self, callback_id: str, kind: str, detail: str, at: float) -> None: ...

    async def health_history(self, callback_id: str, limit: int) -> list[HealthEvent]: ...

    async def recent_attempts(self, callback_id: str, limit: int) -> list[AttemptRow]: ...

    async def attempt_series(self, callback_id: str, since_ms: int, bucket_ms: int) -> list[AttemptBucket]: ...

    async def callback_health(self, callback_id: str, since: float) -> CallbackHealth: ...

    async def message_timeline(self, account_id: str, field: str, value: str,
                               limit: int) -> list[MessageEvent]: ...

    async def attempt_counts(self, account_id: str, since_ms: int, bucket_ms: int) -> list[AttemptCount]: ...

    async def event_counts(self, account_id: str, since_ms: int, bucket_ms: int) -> list[EventCount]: ...

    async def purge_older_than(self, events_before: float, attempts_before: float,
                               deadletters_before: float, batch: int = 5000) -> dict[str, int]: ...

    async def count_routed(self, callback_id: str, since_ms: int, until_ms: int,
                           event_types: Sequence[str] | None) -> int: ...

    async def routed_page(self, callback_id: str, since_ms: int, until_ms: int, event_types: Sequence[str] | None,
                          after_job_id: int, limit: int) -> list[StoredDelivery]: ...

    async def count_deadletters_matching(self, account_id: str, selection: DeadLetterFilter) -> int: ...

    # -- durable operations (runner: claim under a lease, report progress, finish) -------------
    async def create_operation(self, op: Operation) -> None: ...

    async def get_operation(self, op_id: str, account_id: str) -> Operation: ...

    async def list_operations(self, account_id: str, kind: str | None, limit: int) -> list[Operation]: ...

    async def claim_operation(self, owner: str, now: float, lease_until: float) -> Operation | None: ...

    async def record_operation_progress(self, op_id: str, owner: str, done: int, total: int | None,
                                        cursor: str | None, now: float, lease_until: float) -> bool:
        """Also renews the lease; False when the operation was cancelled, paused, or taken over."""

    async def finish_operation(self, op_id: str, owner: str, state: str, error: str | None,
                               now: float) -> None: ...

    async def release_operation(self, op_id: str, owner: str) -> None: ...

    async def change_operation_state(self, op_id: str, account_id: str, action: str, now: float) -> Operation:
        """``cancel``, ``pause`` or ``resume``; raises NotFound, or Conflict when the state does not allow it."""

    async def purge_finished_operations(self, before: float) -> int: ...
