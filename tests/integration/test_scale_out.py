"""Several relay instances on one PostgreSQL store and one consumer group (6 partitions).

Each instance is a real ``relay serve`` process; the receiver fails a share of first attempts,
so retries are pending in the store when an instance dies and must continue elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web as aiohttp_web

from tests.helpers.harness import ADMIN_KEY, ApiClient, create_tenant, settings_values
from tests.helpers.kafka import KafkaBroker, free_port
from tests.helpers.polling import eventually
from tests.helpers.postgres import fresh_store_url
from tests.helpers.process import RelayProcess
from tests.helpers.receiver import Received, RecordingReceiver
from tests.integration.test_crashes import assert_per_key_order, events_for, stream, webhook_ids_by_event

pytestmark = pytest.mark.kafka


def cluster(kafka: KafkaBroker, postgres: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Settings for three instances: shared store, topics, group and master key; own API port."""
    shared = settings_values(kafka.bootstrap, tmp_path / "data-0", store_url=fresh_store_url(postgres),
                             master_key=base64.b64encode(os.urandom(32)).decode(), batch_linger="2ms",
                             retry_schedule="0,300ms,600ms", log_level="info")
    return [{**shared, "data_dir": str(tmp_path / f"data-{n}"), "api_listen": f"127.0.0.1:{free_port()}"}
            for n in range(3)]


def flaky(share: float, seed: int) -> Any:
    """Fail ``share`` of first attempts with 500, so retries are pending at any moment."""
    rng = random.Random(seed)
    tried: set[str] = set()

    def respond(received: Received) -> int:
        webhook_id = received.headers["webhook-id"]
        if webhook_id not in tried:
            tried.add(webhook_id)
            if rng.random() < share:
                return 500
        return 200

    return respond


async def register(running: list[RelayProcess], receiver: RecordingReceiver) -> str:
    """An account, a verified callback and a subscription, made on the first instance; returns once
    every running instance's router has loaded them (by itself, every 0.5 s)."""
    admin = ApiClient(running[0].base, ADMIN_KEY)
    tenant = await create_tenant(admin)
    callback = await tenant.add_callback(receiver, maxBatchSize=1)
    version = max(routing_version(i.log_path) for i in running) + 1
    await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])
    await admin.close()
    await tenant.api.close()

    async def reloaded() -> bool:
        return all(routing_version(i.log_path) >= version for i in running)

    await eventually(reloaded, timeout=30, what="routing reloaded on every running instance")
    return tenant.mid


def last_assignment(log: Path) -> set[str]:
    """The partitions an instance was given in its latest rebalance, from its JSON log."""
    assigned: list[str] = []
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"partitions_assigned"' in line:
            assigned = orjson.loads(line)["partitions"]
    return set(assigned)


def cluster_report(instances: list[RelayProcess]) -> str:
    """What each instance did about the group, for a failure message: alive or not, and its rebalance
    and error log lines (the last 15)."""
    lines = []
    for n, instance in enumerate(instances):
        alive = instance.proc is not None and instance.proc.poll() is None
        lines.append(f"instance {n}: {'running' if alive else 'exited'}")
        log = instance.log_path.read_text(errors="replace").splitlines() if instance.log_path.exists() else []
        notable = [line[:300] for line in log if any(word in line for word in (
            "partitions_", "error", "Error", "rebalance", "Traceback", "relay_st"))]
        lines += [f"  {line}" for line in notable[-15:]]
    return "\n".join(lines)


async def all_six_owned(instances: list[RelayProcess]) -> None:
    """Wait until the three running instances own all six partitions between them."""

    async def settled() -> bool:
        owned = [last_assignment(i.log_path) for i in instances]
        return all(owned) and len(set().union(*owned)) == 6

    try:
        await eventually(settled, timeout=60, what="three instances owning all six partitions")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster_report(instances)}") from None


def routing_version(log: Path) -> int:
    """The registry version an instance's router last loaded, from its JSON log (-1: none yet)."""
    versions = [orjson.loads(line)["registry_version"] for line in log.read_text().splitlines()
                if line.startswith("{") and '"routing_reloaded"' in line]
    return max(versions, default=-1)


def assert_complete(receiver: RecordingReceiver, count: int) -> None:
    ids = webhook_ids_by_event(receiver)
    assert len(ids) == count
    assert all(len(hooks) == 1 for hooks in ids.values()), "a re-send came with a new webhook-id"
    assert_per_key_order(receiver)


async def stream_through_a_change(kafka: KafkaBroker, instances: list[RelayProcess], running: int,
                                  change: Callable[[], Awaitable[None]], seed: int,
                                  then: Callable[[], Awaitable[None]] | None = None) -> None:
    """Start ``running`` instances, stream 1,200 events on 30 keys to a flaky receiver, make the
    change mid-stream, and check every event arrived, in per-key order, under one webhook-id;
    ``then`` runs while the instances still run."""
    receiver = await RecordingReceiver(responder=flaky(0.2, seed)).start()
    try:
        await asyncio.gather(*(i.start() for i in instances[:running]))
        mid = await register(instances[:running], receiver)
        events = events_for(mid, 1200, keys=30)
        producer = asyncio.create_task(stream(kafka.bootstrap, instances[0].values["topics"][0], events, 40, 0.05))
        await receiver.wait_for(lambda: len(receiver.delivered()) >= 150, timeout=60)
        await change()
        await producer
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= 1200, timeout=120)
        assert_complete(receiver, 1200)
        if then is not None:
            await then()
    finally:
        for instance in instances:
            instance.ensure_stopped()
        await receiver.stop()


async def test_kill_9_one_of_three_instances_mid_stream(kafka: KafkaBroker, postgres: str, tmp_path: Path) -> None:
    instances = [RelayProcess(v, tmp_path / f"relay-{n}.log") for n, v in enumerate(cluster(kafka, postgres, tmp_path))]

    async def kill_one() -> None:
        instances[1].kill()

    async def survivors_own_all_six() -> None:  # checked while they run: stopping one moves partitions again
        survivors = [last_assignment(tmp_path / f"relay-{n}.log") for n in (0, 2)]
        assert len(survivors[0] | survivors[1]) == 6 and not survivors[0] & survivors[1], cluster_report(instances)

    await stream_through_a_change(kafka, instances, 3, kill_one, seed=9, then=survivors_own_all_six)


async def test_an_instance_added_mid_stream_takes_partitions_without_loss(
        kafka: KafkaBroker, postgres: str, tmp_path: Path) -> None:
    instances = [RelayProcess(v, tmp_path / f"relay-{n}.log") for n, v in enumerate(cluster(kafka, postgres, tmp_path))]

    async def three_own_all_six() -> list[set[str]] | None:
        owned = [last_assignment(i.log_path) for i in instances]
        return owned if all(owned) and len(owned[0] | owned[1] | owned[2]) == 6 else None

    async def the_new_instance_takes_partitions() -> None:
        """On a busy machine the join's rebalance may end after the stream: wait for it while all
        three still run (stopping them first would make the wait meaningless)."""
        try:
            await eventually(three_own_all_six, timeout=90, what="the added instance owning partitions")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{cluster_report(instances)}") from None

    await stream_through_a_change(kafka, instances, 2, instances[2].start, seed=11,
                                  then=the_new_instance_takes_partitions)


async def test_every_instance_serves_the_same_api_and_routing_follows_by_itself(
        kafka: KafkaBroker, postgres: str, tmp_path: Path) -> None:
    instances = [RelayProcess(v, tmp_path / f"relay-{n}.log") for n, v in enumerate(cluster(kafka, postgres, tmp_path))]
    receiver = await RecordingReceiver().start()
    try:
        await asyncio.gather(*(i.start() for i in instances))
        logs = [tmp_path / f"relay-{n}.log" for n in range(3)]

        async def settled() -> bool:  # the group settles: each instance owns two of the six partitions
            return all(last_assignment(log) for log in logs)

        await eventually(settled, timeout=60, what="every instance owns partitions")
        admin = ApiClient(instances[0].base, ADMIN_KEY)
        tenant = await create_tenant(admin)
        callback = await tenant.add_callback(receiver, maxBatchSize=1)
        views = []
        for instance in instances:
            client = ApiClient(instance.base, tenant.api.key)
            views.append([(await client.call("GET", "/v1/callbacks", expect=200))[1],
                          (await client.call("GET", f"/v1/callbacks/{callback['id']}", expect=200))[1]])
            await client.close()
        assert views[0] == views[1] == views[2]

        # A subscription made on instance 2 routes events on all three, with no restart.
        other = ApiClient(instances[2].base, tenant.api.key)
        version = max(routing_version(log) for log in logs) + 1  # the subscription's version is at least this
        await other.call("POST", "/v1/subscriptions", {
            "name": "all", "callbackId": callback["id"], "eventCategoryTypes": ["TransactionalSendEvents.*"],
        }, expect=201)

        async def reloaded() -> bool:  # every instance's router picks it up by itself (every 0.5 s)
            return all(routing_version(log) >= version for log in logs)

        await eventually(reloaded, timeout=30, what="routing reloaded on every instance")
        events = events_for(tenant.mid, 120, keys=60)  # keys spread over all six partitions
        await stream(kafka.bootstrap, instances[0].values["topics"][0], events, 120, 0)
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= 120, timeout=30)
        owned = [last_assignment(log) for log in logs]
        assert all(owned), "every instance owns partitions, so every instance routed some events"
        for client in (admin, other, tenant.api):
            await client.close()
    finally:
        for instance in instances:
            instance.ensure_stopped()
        await receiver.stop()


async def test_a_rate_limit_holds_across_three_instances(kafka: KafkaBroker, postgres: str, tmp_path: Path) -> None:
    """Each instance enforces its owned share of the partitions: together they stay within the limit."""
    instances = [RelayProcess(v, tmp_path / f"relay-{n}.log") for n, v in enumerate(cluster(kafka, postgres, tmp_path))]
    receiver = await RecordingReceiver().start()
    try:
        await asyncio.gather(*(i.start() for i in instances))
        logs = [i.log_path for i in instances]

        await all_six_owned(instances)
        admin = ApiClient(instances[0].base, ADMIN_KEY)
        tenant = await create_tenant(admin)
        callback = await tenant.add_callback(receiver, maxBatchSize=10, rateLimit={"eventsPerSecond": 30})
        version = max(routing_version(log) for log in logs) + 1
        await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])

        async def reloaded() -> bool:
            return all(routing_version(log) >= version for log in logs)

        await eventually(reloaded, timeout=30, what="routing reloaded on every instance")
        await stream(kafka.bootstrap, instances[0].values["topics"][0], events_for(tenant.mid, 300, keys=60), 300, 0)
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= 300, timeout=120)
        arrivals = sorted(r.at for r in receiver.delivered() for _ in r.json)
        seconds = arrivals[-1] - arrivals[0]
        # 30 events/s with a one-second burst on each instance (30 together): 300 events take at least
        # (300 - 30) / 30 = 9 s; 10 % over the limit would finish in 8.2 s.
        print(f"rate limit 30/s across three instances: 300 events in {seconds:.2f}s ({270 / seconds:.1f}/s after "
              "the first second's burst)")
        assert seconds >= 9 * 0.92, f"300 events in {seconds:.2f}s: {270 / seconds:.1f}/s against a limit of 30/s"
        assert max(len(r.json) for r in receiver.delivered()) <= 10
        for client in (admin, tenant.api):
            await client.close()
    finally:
        for instance in instances:
            instance.ensure_stopped()
        await receiver.stop()


async def test_a_429_retry_after_pauses_the_callback_on_every_instance(
        kafka: KafkaBroker, postgres: str, tmp_path: Path) -> None:
    instances = [RelayProcess(v, tmp_path / f"relay-{n}.log") for n, v in enumerate(cluster(kafka, postgres, tmp_path))]
    answers = iter([429])

    def respond(received: Received) -> Any:
        status = next(answers, 200)
        return aiohttp_web.Response(status=429, headers={"retry-after": "4"}) if status == 429 else 200

    receiver = await RecordingReceiver(responder=respond).start()
    try:
        await asyncio.gather(*(i.start() for i in instances))
        logs = [i.log_path for i in instances]

        await all_six_owned(instances)
        mid = await register(instances, receiver)
        before = max(routing_version(log) for log in logs)
        topic = instances[0].values["topics"][0]
        await stream(kafka.bootstrap, topic, events_for(mid, 1, keys=1), 1, 0)
        await receiver.wait_for(lambda: len(receiver.requests) >= 1, timeout=30)
        refused = receiver.requests[0]
        assert refused.status == 429

        async def paused_everywhere() -> bool:  # the pause is a registry change: it travels with routing
            return all(routing_version(log) > before for log in logs)

        await eventually(paused_everywhere, timeout=30, what="every instance reloading the throttled callback")
        others = [e for e in events_for(mid, 60, keys=60) if e["info"]["subscriberKey"] != "key-0"]
        await stream(kafka.bootstrap, topic, others, 60, 0)
        await receiver.wait_for(lambda: len(receiver.delivered_events()) >= len(others) + 1, timeout=60)
        first = min(receiver.delivered(), key=lambda r: r.at)
        assert first.at >= refused.at + 4 * 0.9, (
            f"a send went out {first.at - refused.at:.2f}s after a 429 asking for 4s: {first.json[0]['info']} "
            f"{first.headers['webhook-id']} vs {refused.headers['webhook-id']} {refused.json[0]['info']}")
    finally:
        for instance in instances:
            instance.ensure_stopped()
        await receiver.stop()
