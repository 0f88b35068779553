"""The store refuses a record, or goes away: ingest isolates the one and waits out the other.

A value the database refuses is made real with a rule the database itself enforces (a trigger on
SQLite, a CHECK constraint on PostgreSQL), as a DBA might add one: the decoder lets the event
through, the store refuses it, and ingest must find it by splitting the batch.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from relay.metrics import METRICS
from relay.samples import sample_event
from tests.helpers.harness import RelayHarness, settings_for
from tests.helpers.kafka import KafkaBroker, read_topic
from tests.helpers.polling import eventually
from tests.helpers.postgres import PostgresServer, fresh_store_url
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka


def refuse_poison(store_url: str) -> None:
    """Make the store refuse events whose subscriberKey starts with 'poison'."""
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            conn.execute("CREATE TRIGGER refuse_poison BEFORE INSERT ON events "
                         "WHEN NEW.subscriber_key LIKE 'poison%' "
                         "BEGIN SELECT RAISE(ABORT, 'poison refused by the database'); END")
    else:
        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE events ADD CONSTRAINT refuse_poison "
                         "CHECK (subscriber_key NOT LIKE 'poison%')")


async def produce_spread(bootstrap: str, topic: str, events: list[dict], partitions: int = 6) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, orjson.dumps(e), partition=i % partitions)
                   for i, e in enumerate(events)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def readiness(base: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(base + "/readyz") as response:
        return response.status, await response.json()


async def test_records_the_store_refuses_are_isolated_and_the_rest_flows(
        kafka: KafkaBroker, tmp_path: Path, receiver: RecordingReceiver) -> None:
    harness = RelayHarness(settings_for(kafka.bootstrap, tmp_path / "data", log_level="error"))
    await harness.start()
    try:
        tenant, _ = await harness.subscribed_tenant(receiver, ["TransactionalSendEvents.*"])
        refuse_poison(harness.settings.resolved_store_url)
        rejected_before = METRICS.ingest_errors.labels("store_rejected")._value.get()

        keys = [f"poison-{i}" if i % 37 == 5 else f"good-{i}" for i in range(400)]
        events = [sample_event("EmailSent", mid=tenant.mid, subscriber_key=k) for k in keys]
        await produce_spread(kafka.bootstrap, harness.topic, events)

        good = {k for k in keys if k.startswith("good")}
        await receiver.wait_for(lambda: good <= {e["info"]["subscriberKey"] for e in receiver.delivered_events()},
                                timeout=60)
        assert harness.relay is not None
        poison = sorted(k for k in keys if k.startswith("poison"))

        async def quarantined() -> list:
            rows = [q for q in await harness.relay.store.list_quarantine(limit=1000) if q.topic == harness.topic]
            return rows if len(rows) >= len(poison) else []

        rows = await eventually(quarantined, timeout=30, what="every refused record in quarantine")
        assert sorted(orjson.loads(q.raw)["info"]["subscriberKey"] for q in rows) == poison
        assert {q.reason for q in rows} == {"store_rejected"}
        assert all("IntegrityError" in q.detail or "CheckViolation" in q.detail for q in rows), rows[0].detail
        assert not any(e["info"]["subscriberKey"].startswith("poison") for e in receiver.delivered_events())
        assert METRICS.ingest_errors.labels("store_rejected")._value.get() > rejected_before
        status, body = await readiness(harness.base)
        assert status == 200, body
    finally:
        await harness.close()


async def test_a_postgres_outage_loses_nothing_and_is_visible(
        kafka: KafkaBroker, tmp_path: Path, receiver: RecordingReceiver) -> None:
    server = PostgresServer()
    store_url = fresh_store_url(server.start())
    harness = RelayHarness(settings_for(kafka.bootstrap, tmp_path / "data", store_url=store_url,
                                        ingest_stall_seconds="4s", log_level="error"))
    await harness.start()
    try:
        tenant, _ = await harness.subscribed_tenant(receiver, ["TransactionalSendEvents.*"])

        before = [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"before-{i}") for i in range(60)]
        await produce_spread(kafka.bootstrap, harness.topic, before)
        await receiver.wait_events(60, timeout=30)

        server.stop()
        down_at = time.monotonic()
        during = [sample_event("SmsSent", mid=tenant.mid, subscriber_key=f"during-{i}") for i in range(120)]
        await produce_spread(kafka.bootstrap, harness.topic, during)

        async def unready_and_stalled() -> dict:
            status, body = await readiness(harness.base)
            failures = body.get("failures", {})
            return body if status == 503 and "store" in failures and "ingest" in failures else {}

        body = await eventually(unready_and_stalled, timeout=40, what="/readyz reporting the outage and the stall")
        assert "has not committed" in body["failures"]["ingest"]
        await asyncio.sleep(max(0.0, 20.0 - (time.monotonic() - down_at)))  # a 20-second outage
        server.start()

        wanted = {e["info"]["subscriberKey"] for e in before + during}
        await receiver.wait_for(
            lambda: wanted <= {e["info"]["subscriberKey"] for e in receiver.delivered_events()}, timeout=90)

        async def ready() -> bool:
            return (await readiness(harness.base))[0] == 200

        await eventually(ready, timeout=30, what="/readyz ready again after the outage")
        assert harness.relay is not None
        assert [q for q in await harness.relay.store.list_quarantine() if q.topic == harness.topic] == []
        ops = [orjson.loads(v) for v in await read_topic(kafka.bootstrap, harness.settings.ops_topic, 2, timeout=30)]
        kinds = Counter(o["type"] for o in ops)
        assert kinds["ingest.stalled"] >= 1 and kinds["ingest.resumed"] >= 1, ops
    finally:
        await harness.close()
        server.stop()
