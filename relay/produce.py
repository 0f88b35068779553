"""Producing sample events to Kafka at a steady rate (``relay produce``, demo, benchmarks)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer

from relay.samples import full_type, sample_event


async def produce_samples(
    bootstrap: str,
    topic: str,
    types: Sequence[str],
    count: int,
    rate: float = 0.0,
    mid: int | str = 514009876,
    subscribers: int = 1000,
    seed: int | None = None,
) -> int:
    """Send ``count`` events (``rate`` per second, 0 = as fast as possible), keyed by subscriberKey."""
    rng = random.Random(seed)
    full_types = [full_type(t) for t in types]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for n in range(count):
            subscriber = f"sub-{rng.randrange(subscribers):05d}"
            event = sample_event(rng.choice(full_types), mid=mid, rng=rng, subscriber_key=subscriber)
            pending.append(await producer.send(topic, orjson.dumps(event), key=subscriber.encode()))
            if rate > 0:
                due = started + (n + 1) / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count
