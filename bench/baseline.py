"""Reference points for the delivery benchmark, each run as its own process.

    python -m bench.baseline naive   --bootstrap B --topic T --url U --events N --secret S
    python -m bench.baseline ceiling --url U --events N [--concurrency 64]

naive:   what a first attempt looks like — one consumer, one sequential signed POST per event,
         an offset commit after each. No store, no batching, no concurrency.
ceiling: no Kafka and no store at all — a plain aiohttp client posting single-event bodies to the
         same receiver as fast as it can. Nothing that relays events can beat it.
Both print one JSON line: {"events", "seconds", "per_s"}.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["naive", "ceiling"])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--topic")
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--secret", default="whsec_" + "A" * 43 + "=")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.mode == "naive":
        result = asyncio.run(naive(args.bootstrap, args.topic, args.url, args.events, args.secret))
    else:
        result = asyncio.run(ceiling(args.url, args.events, args.concurrency))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
