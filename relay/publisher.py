"""Writing Relay's own records to Kafka: quarantine, dead letters, operational events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer


class Publisher:
    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=True,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, topic: str, record: dict[str, Any], key: bytes | None = None) -> None:
        await self._producer.send_and_wait(topic, orjson.dumps(record), key=key)

    async def publish_many(self, topic: str, records: Sequence[tuple[Mapping[str, Any], bytes | None]]) -> None:
        """Send all, then wait for all: one round trip for a batch instead of one per record."""
        futures = [
            await self._producer.send(topic, orjson.dumps(record), key=key)
            for record, key in records
        ]
        for future in futures:
            await future
