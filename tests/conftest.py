"""Session fixtures: one real Kafka broker (ours, or the one RELAY_KAFKA_BOOTSTRAP names) and,
when needed, one real PostgreSQL server (ours, or the one RELAY_TEST_POSTGRES_URL names).

``RELAY_TEST_STORE=postgres`` runs every test on PostgreSQL (a fresh schema per relay)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relay.crypto import SecretBox
from relay.store.sql import SqlStore
from relay.store.sqlite import SqliteStore
from tests.helpers.harness import RelayHarness, settings_for
from tests.helpers.kafka import KafkaBroker, free_port, wait_for_metadata
from tests.helpers.postgres import URL_VARIABLE, PostgresServer, fresh_store_url, testing_postgres
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The base URL of a PostgreSQL server; per-relay schemas come from ``fresh_store_url``."""
    url = os.environ.get(URL_VARIABLE)
    if url:
        yield url
        return
    server = PostgresServer()
    os.environ[URL_VARIABLE] = url = server.start()
    try:
        yield url
    finally:
        del os.environ[URL_VARIABLE]
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def store_backend(request: pytest.FixtureRequest) -> str:
    if testing_postgres():
        request.getfixturevalue("postgres")
        return "postgres"
    return "sqlite"


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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A store of the suite's kind on its own (SQLite, or a fresh PostgreSQL schema in that pass)."""
    box = SecretBox(os.urandom(32))
    if testing_postgres():
        from relay.store.postgres import PostgresStore

        opened: SqlStore = PostgresStore(fresh_store_url(os.environ[URL_VARIABLE]), box)
    else:
        opened = SqliteStore(tmp_path / "relay.db", box)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()
