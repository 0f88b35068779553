"""``relay serve --workers 2``: two processes share the partitions on one store, a killed worker is
restarted without losing or reordering anything, one API and /metrics count both, and SIGTERM stops
them all."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.helpers.harness import settings_values
from tests.helpers.kafka import KafkaBroker
from tests.helpers.polling import eventually
from tests.helpers.process import RelayProcess
from tests.helpers.receiver import RecordingReceiver
from tests.integration.test_crashes import assert_per_key_order, events_for, register, stream, webhook_ids_by_event

pytestmark = pytest.mark.kafka

EVENTS = 1500


def workers_of(parent: int) -> dict[int, int]:
    """Worker index to pid, from the children's command lines. A child reaped between the listing
    and its reading (the killed worker) is not a worker any more."""
    found = {}
    for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"--worker-index" in args:
            found[int(args[args.index(b"--worker-index") + 1])] = int(pid)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def group_members(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [description] = await admin.describe_consumer_groups([group])
        return sum(len(g[5]) for g in description.groups if g[2] == "Stable")
    finally:
        await admin.close()


async def consumed_total(base: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
        text = await response.text()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("relay_records_consumed_total"))


async def test_two_workers_share_partitions_and_a_killed_one_comes_back(kafka: KafkaBroker, tmp_path: Path) -> None:
    values = settings_values(kafka.bootstrap, tmp_path / "data", batch_linger="2ms")
    receiver = await RecordingReceiver().start()
    # Registered first, on one process: a worker that starts later loads it before it consumes. (A
    # registration reaches other processes within a routing reload, and events of a mid no process
    # knows yet are not delivered.)
    single = RelayProcess(values, tmp_path / "single.log")
    await single.start()
    mid, _, _ = await register(single.base, receiver, 10)
    assert await single.terminate() == 0
    values["workers"] = 2
    relay = RelayProcess(values, tmp_path / "relay.log")

    async def both_workers() -> dict[int, int] | None:
        assert relay.proc is not None
        found = workers_of(relay.proc.pid)
        return found if len(found) == 2 else None

    async def both_in_the_group() -> bool:
        return await group_members(kafka.bootstrap, values["consumer_group"]) == 2

    async def both_counted() -> bool:
        return await consumed_total(relay.base) >= EVENTS

    try:
        await relay.start(timeout=90)
        first = await eventually(both_workers, timeout=60, what="two worker processes")
        await eventually(both_in_the_group, timeout=60, what="both workers in the consumer group")

        producer = asyncio.create_task(stream(kafka.bootstrap, values["topics"][0], events_for(mid, EVENTS), 50, 0.05))
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= 200, timeout=60)
        os.kill(first[1], signal.SIGKILL)  # the worker without the API

        async def restarted() -> dict[int, int] | None:
            found = await both_workers()
            return found if found and found[1] != first[1] else None

        second = await eventually(restarted, timeout=60, what="the killed worker restarted")
        assert second[0] == first[0]
        await producer
        await receiver.wait_for(lambda: len(webhook_ids_by_event(receiver)) >= EVENTS, timeout=120)

        ids = webhook_ids_by_event(receiver)
        assert len(ids) == EVENTS
        assert all(len(hooks) == 1 for hooks in ids.values()), "a duplicate came with a new webhook-id"
        assert_per_key_order(receiver)
        await eventually(both_in_the_group, timeout=60, what="the restarted worker back in the consumer group")
        # The API's /metrics adds up every worker's counters, the killed one's included.
        await eventually(both_counted, timeout=30, what="relay_records_consumed_total over both workers")

        assert await relay.terminate(timeout=60) == 0
        assert not any(alive(pid) for pid in second.values())
    finally:
        relay.ensure_stopped()
        await receiver.stop()
