"""Quarantine: a record Relay cannot deliver is kept with its reason, and published to its topic.

The ``quarantine`` table is the source of truth and the topic's outbox. Ingest writes a row in the
same transaction as the rest of its batch (unique per topic, partition and offset, so a batch
read again adds nothing), and never waits for the topic: ``QuarantineOutbox`` publishes rows not
yet on it, after each batch and on a timer, so a broker outage or a refused record delays the
topic, never the commit. A published record always fits the producer's limit: raw bytes beyond
``PUBLISHED_RAW_BYTES`` are cut, and their full length and SHA-256 are given instead.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from relay.metrics import METRICS
from relay.publisher import Publisher
from relay.store.base import Store
from relay.store.models import QuarantinedRecord
from relay.supervisor import Routine, Supervisor

log = structlog.get_logger("relay.quarantine")

STORED_TOO_LARGE_BYTES = 64 * 1024  # what the table keeps of a record over max_record_bytes
PUBLISHED_RAW_BYTES = 64 * 1024
PUBLISHED_KEY_BYTES = 4 * 1024
DETAIL_CHARS = 2000


def storable_text(text: str, limit: int = DETAIL_CHARS) -> str:
    """Text any store accepts: no U+0000, no lone surrogates (both come from producers' data)."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def quarantine_entry(topic: str, partition: int, offset: int, reason: str, detail: str,
                     value: bytes | None, key: bytes | None, at: float,
                     account_id: str | None = None) -> QuarantinedRecord:
    return QuarantinedRecord(topic=topic, partition=partition, offset=offset, reason=reason,
                             detail=storable_text(detail), raw=value, key=key, at=at, account_id=account_id)


def claimed_mid(value: bytes | None) -> str | None:
    """The MID a refused record names, if its JSON parses far enough to say: the record is then shown
    to that account (a producer is trusted to name its account, as for events)."""
    if not value:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    mid = data.get("mid") if isinstance(data, dict) else None
    if isinstance(mid, bool) or not isinstance(mid, int | str):
        return None
    return str(mid)


def quarantine_message(q: QuarantinedRecord) -> dict[str, Any]:
    """The record published to the quarantine topic: coordinates, reason, and the raw bytes
    (base64) — cut beyond a cap, so it always fits the producer's request size."""
    message: dict[str, Any] = {
        "reason": q.reason,
        "detail": q.detail,
        "topic": q.topic,
        "partition": q.partition,
        "offset": q.offset,
        "at": q.at,
    }
    message.update(_bytes_field("key", q.key, PUBLISHED_KEY_BYTES))
    message.update(_bytes_field("value", q.raw, PUBLISHED_RAW_BYTES))
    return message


def _bytes_field(name: str, data: bytes | None, cap: int) -> dict[str, Any]:
    if data is None:
        return {name: None}
    field: dict[str, Any] = {name: base64.b64encode(data[:cap]).decode()}
    if len(data) > cap:
        field[f"{name}Truncated"] = True
        field[f"{name}Bytes"] = len(data)
        field[f"{name}Sha256"] = hashlib.sha256(data).hexdigest()
    return field


class QuarantineOutbox:
    """Publishes quarantine rows that are not yet on the topic; started and stopped by ingest.
    A failed publish is retried by the supervisor with a growing backoff."""

    def __init__(self, store: Store, publisher: Publisher, topic: str, clock: Callable[[], float],
                 supervisor: Supervisor, interval: float = 5.0, batch: int = 200,
                 publish_timeout: float = 10.0) -> None:
        self._store = store
        self._publisher = publisher
        self._topic = topic
        self._clock = clock
        self._interval = interval
        self._batch = batch
        self._publish_timeout = publish_timeout
        self._wake = asyncio.Event()
        self._supervisor = supervisor
        self._routine: Routine | None = None

    def start(self) -> None:
        self._routine = self._supervisor.every("quarantine-outbox", self._interval, self._drain, wake=self._wake)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._routine is not None:
            await self._routine.stop()
            self._routine = None

    async def _drain(self) -> None:
        while await self.flush() == self._batch:
            pass

    async def flush(self) -> int:
        """Publish one group of unpublished rows; return how many there were."""
        rows = await self._store.unpublished_quarantine(self._batch)
        METRICS.quarantine_unpublished.set(len(rows))
        if not rows:
            return 0
        await asyncio.wait_for(
            self._publisher.publish_many(self._topic, [(quarantine_message(q), _cut(q.key)) for q in rows]),
            timeout=self._publish_timeout,
        )
        await self._store.mark_quarantine_published([q.id for q in rows if q.id is not None], self._clock())
        METRICS.quarantine_unpublished.set(0)
        return len(rows)


def _cut(key: bytes | None) -> bytes | None:
    return None if key is None else key[:PUBLISHED_KEY_BYTES]
