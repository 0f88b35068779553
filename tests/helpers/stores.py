"""Jobs written straight through a store, for tests of the store's own rules."""

from __future__ import annotations

import orjson

from relay.events import RecordRef, decode_event
from relay.samples import sample_event
from relay.store.models import IncomingEvent, NewJob
from relay.store.sql import SqlStore


async def persist_jobs(store: SqlStore, count: int, callback_id: str = "cb_pins", topic: str = "pins") -> list[int]:
    """``count`` events of one partition, one job each for ``callback_id``; their job ids in order."""
    events, jobs = [], []
    for n in range(count):
        event = decode_event(orjson.dumps(sample_event("EmailSent", mid="777", subscriber_key=f"s{n}")),
                             RecordRef(topic, 0, n), 1 << 20)
        events.append(IncomingEvent(event, "acct_pins", topic, 0, n))
        jobs.append(NewJob(event.id, callback_id, event.subscriber_key, 0, topic=topic))
    return sorted(job.id for job in await store.persist_batch(events, jobs, []))
