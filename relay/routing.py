"""Which callbacks want an event: an in-memory index of active subscriptions, with filters.

The index is immutable and rebuilt whole when the registry changes (polled once per
``refresh_interval``), so routing on the hot path takes no locks and makes no store calls.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import msgspec
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
    return _parse_filter(text)


@lru_cache(maxsize=65536)
def _parse_filter(text: str) -> Filter:
    """Memoised: the index is rebuilt whole on every registry change, and a Filter is immutable."""
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


class Route(msgspec.Struct, frozen=True):
    callback: Callback
    ordering_key: str | None
    held_by: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    subscription: Subscription
    callback: Callback
    filters: tuple[Filter, ...]


class _Candidates:
    """The subscriptions of one (account, event type), wildcards included, in registration order.

    Those with an equality filter (``field=a|b``) are also filed under each wanted value of the
    first such filter, so an event looks only at the ones its value can match: routing stays flat
    with thousands of filtered subscriptions instead of testing every one of them per event."""

    def __init__(self, entries: list[_Entry]) -> None:
        self.unkeyed: list[tuple[int, _Entry]] = []
        self.keyed: dict[str, dict[str, list[tuple[int, _Entry]]]] = {}
        for position, entry in enumerate(entries):
            key = next((f for f in entry.filters if f.op == "="), None)
            if key is None:
                self.unkeyed.append((position, entry))
                continue
            by_value = self.keyed.setdefault(key.field, {})
            for value in key.values:
                by_value.setdefault(value, []).append((position, entry))

    def for_event(self, data: dict[str, Any]) -> list[_Entry]:
        if not self.keyed:
            return [entry for _, entry in self.unkeyed]
        found = list(self.unkeyed)
        info = data.get("info")
        for name, by_value in self.keyed.items():
            raw = data.get(name) if name in TOP_LEVEL_FIELDS else info.get(name) if isinstance(info, dict) else None
            if raw is not None:
                found += by_value.get(str(raw), ())
        found.sort(key=lambda item: item[0])  # registration order decides between two of one callback
        return [entry for _, entry in found]


class SubscriptionIndex:
    """(account, event type) → subscriptions; category wildcards (``Category.*``) included."""

    def __init__(
        self,
        account_by_mid: dict[str, str],
        callbacks: list[Callback],
        subscriptions: list[Subscription],
    ) -> None:
        self._account_by_mid = account_by_mid
        usable = {c.id: c for c in callbacks if c.verified and c.enabled}
        exact: dict[tuple[str, str], list[_Entry]] = defaultdict(list)
        category: dict[tuple[str, str], list[_Entry]] = defaultdict(list)
        for sub in subscriptions:
            callback = usable.get(sub.callback_id)
            held = sub.status == "paused" and sub.on_pause == "hold"
            if callback is None or (sub.status != "active" and not held):
                continue
            entry = _Entry(sub, callback, tuple(parse_filter(f) for f in sub.filters))
            for event_type in sub.event_types:
                if event_type.endswith(".*"):
                    category[(sub.account_id, event_type[:-2])].append(entry)
                else:
                    exact[(sub.account_id, event_type)].append(entry)
        self._exact = dict(exact)
        self._category = dict(category)
        self._candidates: dict[tuple[str, str], _Candidates] = {}

    def account_for(self, mid: str) -> str | None:
        return self._account_by_mid.get(mid)

    def _for(self, account_id: str, event_type: str) -> _Candidates:
        """Built on first use per (account, type): exact subscriptions, then the category's."""
        key = (account_id, event_type)
        candidates = self._candidates.get(key)
        if candidates is None:
            entries = self._exact.get(key, []) + self._category.get((account_id, event_type.partition(".")[0]), [])
            candidates = self._candidates[key] = _Candidates(entries)
        return candidates

    def route(self, event: Event, account_id: str) -> list[Route]:
        """Callbacks that want ``event``; each callback at most once."""
        routes: dict[str, Route] = {}
        for entry in self._for(account_id, event.type).for_event(event.data):
            known = routes.get(entry.callback.id)
            if known is not None and known.held_by is None:
                continue
            if not entry.filters or all(f.matches(event.data) for f in entry.filters):
                sub = entry.subscription
                held_by = sub.id if sub.status == "paused" else None
                if known is None or held_by is None:
                    routes[entry.callback.id] = Route(entry.callback, _ordering_key(event, entry), held_by)
        return list(routes.values())


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
        self._reloading = asyncio.Lock()
        self._asked = 0
        self._reloaded_upto = 0
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
        """Reload if the registry changed. One reload at a time, and a caller waiting for the lock
        skips its own when a reload that began after it asked has run (that one saw its write):
        a burst of API writes costs two rebuilds, not one per write."""
        self._asked += 1
        ticket = self._asked
        async with self._reloading:
            if self._reloaded_upto >= ticket:
                return False
            upto = self._asked
            changed = await self._reload()
            self._reloaded_upto = upto
            return changed

    async def _reload(self) -> bool:
        version = await self._store.registry_version()
        if version == self._version:
            return False
        self.index, callbacks = await build_index(self._store)
        self.callbacks = {c.id: c for c in callbacks}
        self._version = version
        log.info("routing_reloaded", registry_version=version)
        return True

