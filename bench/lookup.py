"""Message-status lookup latency with many stored events (the customer-service question).

    python -m bench.lookup [--events 1000000] [--lookups 2000]

Fills a fresh SQLite store through the same ``persist_batch`` the relay uses (one account, three
events per message: sent, bounced, delivered), then times ``message_timeline`` for random message
keys and subscriber keys. Prints p50/p99/max and appends a record to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import tempfile
import time
from pathlib import Path

import orjson

from relay.crypto import SecretBox
from relay.events import RecordRef, decode_event
from relay.samples import sample_event
from relay.store.models import IncomingEvent, NewJob
from relay.store.sqlite import SqliteStore

RESULTS = Path(__file__).resolve().parent / "results"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(3)
    store = SqliteStore(Path(tempfile.mkdtemp(prefix="relay-lookup-")) / "relay.db", SecretBox(b"k" * 32))
    await store.start()
    messages = args.events // 3
    fill_started = time.perf_counter()
    offset = 0
    for start in range(0, messages, 1000):
        rows, jobs = [], []
        for m in range(start, min(messages, start + 1000)):
            for kind in ("EmailSent", "EmailBounced", "SmsDelivered"):
                raw = orjson.dumps(sample_event(kind, mid=1, rng=rng, subscriber_key=f"sub-{m % 50000:05d}",
                                                message_key=f"msg-{m:07d}"))
                event = decode_event(raw, RecordRef("bench", 0, offset), 1 << 20)
                rows.append(IncomingEvent(event, "acct", "bench", 0, offset))
                jobs.append(NewJob(event.id, "cb_bench", event.subscriber_key, 0))
                offset += 1
        await store.persist_batch(rows, jobs, [])
    fill_seconds = time.perf_counter() - fill_started

    timings: dict[str, list[float]] = {"messageKey": [], "subscriberKey": []}
    for _ in range(args.lookups):
        for field, value in (("messageKey", f"msg-{rng.randrange(messages):07d}"),
                             ("subscriberKey", f"sub-{rng.randrange(50000):05d}")):
            started = time.perf_counter()
            timeline = await store.message_timeline("acct", field, value, 200)
            timings[field].append((time.perf_counter() - started) * 1000)
            assert timeline, f"no events for {field}={value}"
    await store.close()
    result = {
        "events": offset, "fill_events_per_s": round(offset / fill_seconds),
        **{f"{field}_{name}_ms": round(pct(values, q), 2) for field, values in timings.items()
           for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
    }
    print(result)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stamp}-lookup.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    asyncio.run(main())
