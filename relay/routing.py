"""Which callbacks want an event: an in-memory index of active subscriptions, with filters.

The index is immutable and rebuilt whole when the registry changes (polled once per
``refresh_interval``), so routing on the hot path takes no locks and makes no store calls.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from relay.events import Event
from relay.store.base import Store
from relay.store.models import Callback, Subscription
from relay.supervisor import Routine, Supervisor

log = structlog.get_logger("relay.routing")

TOP_LEVEL_FIELDS = ("eventCategoryType", "definitionKey", "definitionId", "compositeId", "mid", "eid")
INFO_FIELDS = (
    "to", "subscriberKey", "messageKey", "status", "reason", "statusCode",
    "bounceCode", "bounceMessage", "smtpReason",
)
FILTER_FIELDS = TOP_LEVEL_FIELDS + INFO_FIELDS


class InvalidFilter(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Filter:
    """``field=value``, ``field!=value``, or ``field=a|b`` (any of the values)."""

    field: str
    op: Literal["=", "!="]
    values: frozenset[str]

    def matches(self, data: dict[str, Any]) -> bool:
        if self.field in TOP_LEVEL_FIELDS:
            raw = data.get(self.field)
        else:
            info = data.get("info")
            raw = info.get(self.field) if isinstance(info, dict) else None
        hit = raw is not None and str(raw) in self.values
        return hit if self.op == "=" else not hit


def parse_filter(text: str) -> Filter:
    if not isinstance(text, str):
        raise InvalidFilter("a filter is a string like definitionKey=welcome")
    op: Literal["=", "!="] = "!=" if "!=" in text else "="
    field, sep, value = text.partition(op)
    field = field.strip()
    if not sep or not field:
        raise InvalidFilter(f"{text!r} is not field=value, field!=value or field=a|b")
    if field not in FILTER_FIELDS:
        raise InvalidFilter(f"{field!r} cannot be filtered on; fields: {', '.join(FILTER_FIELDS)}")
    if value.startswith(("=", "!")) or field.endswith(("!", "<", ">")):
        raise InvalidFilter(f"{text!r} is not field=value, field!=value or field=a|b (one '=' only)")
    values = frozenset(v.strip() for v in value.split("|"))
    if not all(values):
        raise InvalidFilter(f"{text!r} has an empty value")
    return Filter(field, op, values)


@dataclass(frozen=True, slots=True)
class Route:
    callback: Callback
    ordering_key: str | None
    held_by: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    subscription: Subscription
    callback: Callback
    filters: tuple[Filter, ...]


def _ordering_key(event: Event, entry: _Entry) -> str | None:
    mode = entry.subscription.ordering
    if mode == "subscriberKey":
        return event.subscriber_key
    if mode == "messageKey":
        return event.message_key
    return None


async def build_index(store: Store) -> tuple[SubscriptionIndex, list[Callback]]:
    """The index, and the callbacks it was built from (the dispatcher needs them too)."""
    accounts = await store.list_accounts()
    callbacks = await store.list_callbacks()
    index = SubscriptionIndex({a.mid: a.id for a in accounts}, callbacks, await store.list_subscriptions())
    return index, callbacks


class Router:
    """Keeps a fresh SubscriptionIndex: a registry change is live within ``refresh_interval``."""

    def __init__(self, store: Store, supervisor: Supervisor, refresh_interval: float = 0.5) -> None:
        self._store = store
        self._supervisor = supervisor
        self._interval = refresh_interval
        self._version = -1
        self._routine: Routine | None = None
        self.index = SubscriptionIndex({}, [], [])
        self.callbacks: dict[str, Callback] = {}

    async def start(self) -> None:
        await self.refresh()
        self._routine = self._supervisor.every("router-refresh", self._interval, self.refresh)

    async def stop(self) -> None:
        if self._routine:
            await self._routine.stop()

    @property
    def version(self) -> int:
        """The registry version the index was built from (-1 before the first load)."""
        return self._version

    def callback(self, callback_id: str) -> Callback | None:
        return self.callbacks.get(callback_id)

    async def refresh(self) -> bool:
        version = await self._store.registry_version()
        if version == self._version:
            return False
        self.index, callbacks = await build_index(self._store)
        self.callbacks = {c.id: c for c in callbacks}
        self._version = version
        log.info("routing_reloaded", registry_version=version)
        return True

