"""Session fixtures: one real Kafka broker (ours, or the one RELAY_KAFKA_BOOTSTRAP names)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.helpers.harness import RelayHarness, settings_for
from tests.helpers.kafka import KafkaBroker, free_port, wait_for_metadata
from tests.helpers.receiver import RecordingReceiver


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    bootstrap = os.environ.get("RELAY_KAFKA_BOOTSTRAP")
    if bootstrap:
        wait_for_metadata(bootstrap)
        yield KafkaBroker(bootstrap, managed=False)
        return
    home = Path(tempfile.mkdtemp(prefix="relay-test-kafka-"))
    port, ctl_port = free_port(), free_port()
    broker = KafkaBroker(f"127.0.0.1:{port}", managed=True, home=home, port=port,
                         ctl_port=ctl_port)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def relay(kafka: KafkaBroker, tmp_path: Path) -> AsyncIterator[RelayHarness]:
    harness = RelayHarness(settings_for(kafka.bootstrap, tmp_path / "data"))
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def receiver() -> AsyncIterator[RecordingReceiver]:
    r = await RecordingReceiver().start()
    try:
        yield r
    finally:
        await r.stop()
