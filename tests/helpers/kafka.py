"""A real Kafka broker for the test session, started through ``deploy/kafka/kafka.sh``."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class KafkaBroker:
    """A broker the tests can use, and — when the fixture started it — stop and restart."""

    bootstrap: str
    managed: bool
    home: Path | None = None
    port: int = 0
    ctl_port: int = 0

    def _env(self) -> dict[str, str]:
        return {**os.environ, "KAFKA_PORT": str(self.port), "KAFKA_CTL_PORT": str(self.ctl_port),
                "KAFKA_HOME_DIR": str(self.home)}

    def start(self) -> None:
        if not self.managed:
            return
        subprocess.run([str(SCRIPT), "up"], env=self._env(), check=True, timeout=180)
        wait_for_metadata(self.bootstrap)

    def stop(self) -> None:
        if self.managed:
            subprocess.run([str(SCRIPT), "down"], env=self._env(), check=True, timeout=60)

    def restart(self) -> None:
        if not self.managed:
            raise RuntimeError("cannot restart a broker named by RELAY_KAFKA_BOOTSTRAP")
        self.stop()
        self.start()


def wait_for_metadata(bootstrap: str, timeout: float = 60.0) -> None:
    """Poll until a metadata request succeeds: the port being open is not enough."""

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(probe())
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


async def produce(bootstrap: str, topic: str, values: list[bytes | None],
                  keys: list[bytes | None] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=None if keys is None else keys[i])
            for i, value in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list[bytes]:
    """Read ``expect`` records from the start of ``topic`` (fails after ``timeout``)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        partitions = None
        while partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"topic {topic} does not exist")
                await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(values) < expect:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"read {len(values)} of {expect} records from {topic}")
            batch = await consumer.getmany(timeout_ms=int(min(remaining, 1) * 1000))
            for records in batch.values():
                values += [r.value for r in records]
    finally:
        await consumer.stop()
    return values
