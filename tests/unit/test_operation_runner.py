"""The durable-operation runner against a real SQLite store: one runner at a time per operation,
even through pauses longer than the lease; cancellation seen at the next step."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from relay.crypto import SecretBox
from relay.operations.runner import OperationRunner, Step
from relay.store.models import Operation
from relay.store.sqlite import SqliteStore
from relay.supervisor import Supervisor
from tests.helpers.polling import eventually


class Slow:
    """Three steps, each followed by a pause three times the lease; records who ran each step."""

    name = "slow"

    def __init__(self, runner_name: str, log: list[str]) -> None:
        self.runner_name, self.log = runner_name, log

    async def step(self, op: Operation) -> Step:
        self.log.append(self.runner_name)
        return Step(done=1, total=3, finished=op.done + 1 >= 3, pause=0.9)


async def test_a_pause_longer_than_the_lease_keeps_the_operation_with_its_runner(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.db", SecretBox(os.urandom(32)))
    await store.start()
    supervisors = [Supervisor(), Supervisor()]  # two instances
    ran: list[str] = []
    first = OperationRunner(store, [Slow("first", ran)], supervisors[0], lease=0.3, poll=0.05)
    second = OperationRunner(store, [Slow("second", ran)], supervisors[1], lease=0.3, poll=0.05)
    try:
        first.start()
        op = await first.submit("acc", "slow", {})
        await eventually(lambda: asyncio.sleep(0, bool(ran)), what="the first runner taking it")
        second.start()  # polls every 50 ms while the first pauses 0.9 s between steps

        async def done() -> Operation | None:
            current = await store.get_operation(op.id, "acc")
            return current if current.state == "done" else None

        finished = await eventually(done, timeout=20, what="the operation finishing")
        assert finished.done == 3
        assert ran == ["first", "first", "first"], f"another runner took a paused operation: {ran}"
    finally:
        await first.stop()
        await second.stop()
        for supervisor in supervisors:
            await supervisor.stop()
        await store.close()


async def test_a_cancelled_operation_stops_at_its_next_step(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.db", SecretBox(os.urandom(32)))
    await store.start()
    supervisor = Supervisor()
    ran: list[str] = []
    runner = OperationRunner(store, [Slow("only", ran)], supervisor, lease=0.3, poll=0.05)
    try:
        runner.start()
        op = await runner.submit("acc", "slow", {})
        await eventually(lambda: asyncio.sleep(0, bool(ran)), what="the runner taking it")
        cancelled = await store.change_operation_state(op.id, "acc", "cancel", 0.0)
        await eventually(lambda: asyncio.sleep(0, not runner.running), what="the runner letting go")
        after = await store.get_operation(op.id, "acc")
        assert after.state == "cancelled" and after.done == cancelled.done and len(ran) == 1
    finally:
        await runner.stop()
        await supervisor.stop()
        await store.close()
