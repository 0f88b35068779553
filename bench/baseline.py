"""Reference points for the delivery benchmark, each run as its own process.

    python -m bench.baseline naive   --bootstrap B --topic T --url U --events N --secret S
    python -m bench.baseline ceiling --url U --events N [--concurrency 64]
    python -m bench.baseline bridge  --bootstrap B --topic T --url U --events N --max-batch 100


naive:   what a first attempt looks like — one consumer, one sequential signed POST per event,
         an offset commit after each. No store, no batching, no concurrency.
ceiling: no Kafka and no store at all — a plain aiohttp client posting single-event bodies to the
         same receiver as fast as it can. Nothing that relays events can beat it.
bridge:  the practical ceiling of a Python Kafka→HTTP process here: consume the backlog, group the
         records into batches, splice in an eventId, sign, POST with 64 in flight, commit in order.
         No validation, no store, no per-key ordering, no retries.
All print one JSON line: {"events", "seconds", "per_s"}.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from relay.samples import sample_event
from relay.signing import SigningKeys, delivery_headers


async def naive(bootstrap: str, topic: str, url: str, events: int, secret: str) -> dict[str, float]:
    keys = SigningKeys.from_secrets([secret])
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"naive-{topic}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    done = 0
    started = 0.0
    async with aiohttp.ClientSession() as session:
        try:
            while done < events:
                record = await consumer.getone()
                if not started:
                    started = time.perf_counter()
                event = orjson.loads(record.value)
                event["eventId"] = f"{record.partition}-{record.offset}"
                body = orjson.dumps([event])
                headers = delivery_headers(keys, f"msg_{record.partition}_{record.offset}", int(time.time()), body)
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                await consumer.commit({TopicPartition(record.topic, record.partition): record.offset + 1})
                done += 1
        finally:
            await consumer.stop()
    seconds = time.perf_counter() - started
    return {"events": done, "seconds": round(seconds, 3), "per_s": round(done / seconds)}


async def ceiling(url: str, events: int, concurrency: int) -> dict[str, float]:
    body = orjson.dumps([{**sample_event("EmailSent", mid=777), "eventId": "evt_ceiling"}])
    remaining = events

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as r:
                await r.read()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {"events": events, "seconds": round(seconds, 3), "per_s": round(events / seconds)}


async def bridge(bootstrap: str, topic: str, url: str, events: int, max_batch: int, secret: str,
                 concurrency: int) -> dict[str, float]:
    keys = SigningKeys.from_secrets([secret])
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bridge-{topic}",
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_bytes=64 * 1_048_576, max_partition_fetch_bytes=4 * 1_048_576)
    await consumer.start()
    slots = asyncio.Semaphore(concurrency)
    done = 0
    started = 0.0
    last_commit: asyncio.Task[None] | None = None

    async def post(session: aiohttp.ClientSession, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        nonlocal done
        body = b"[" + b",".join(b'{"eventId":"%d-%d",' % (r.partition, r.offset) + r.value[1:]
                                for r in records if r.value) + b"]"
        first = records[0]
        headers = delivery_headers(keys, f"msg_{first.partition}_{first.offset}", int(time.time()), body)
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
        finally:
            slots.release()
        done += len(records)

    async def commit_after(posts: list[asyncio.Task[None]], previous: asyncio.Task[None] | None,
                           offsets: dict[TopicPartition, int]) -> None:
        await asyncio.gather(*posts)
        if previous is not None:
            await previous
        await consumer.commit(offsets)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            taken = 0
            while taken < events:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                if not batch:
                    continue
                if not started:
                    started = time.perf_counter()
                posts = []
                for records in batch.values():
                    for i in range(0, len(records), max_batch):
                        await slots.acquire()
                        posts.append(asyncio.create_task(post(session, records[i:i + max_batch])))
                    taken += len(records)
                offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
                last_commit = asyncio.create_task(commit_after(posts, last_commit, offsets))
            if last_commit is not None:
                await last_commit
        finally:
            await consumer.stop()
    seconds = time.perf_counter() - started
    return {"events": done, "seconds": round(seconds, 3), "per_s": round(done / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["naive", "ceiling", "bridge"])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--topic")
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--secret", default="whsec_" + "A" * 43 + "=")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=100)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.mode == "naive":
        result = asyncio.run(naive(args.bootstrap, args.topic, args.url, args.events, args.secret))
    elif args.mode == "bridge":
        result = asyncio.run(bridge(args.bootstrap, args.topic, args.url, args.events, args.max_batch, args.secret,
                                    args.concurrency))
    else:
        result = asyncio.run(ceiling(args.url, args.events, args.concurrency))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
