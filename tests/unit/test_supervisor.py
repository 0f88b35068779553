"""The supervisor: a failing routine runs again, a failing task is reported, stop leaves nothing running."""

from __future__ import annotations

import asyncio

import pytest

from relay.metrics import METRICS
from relay.supervisor import Supervisor
from tests.helpers.polling import eventually


def failures(name: str) -> float:
    return METRICS.background_failures.labels(name)._value.get()


async def test_a_routine_that_fails_runs_again_and_is_counted() -> None:
    supervisor = Supervisor()
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("boom")

    before = failures("flaky")
    routine = supervisor.every("flaky", 0.001, flaky)
    await eventually(lambda: asyncio.sleep(0, calls >= 4), timeout=10, what="the routine running after failures")
    assert failures("flaky") - before == 2
    await routine.stop()
    assert not routine.running
    await supervisor.stop()


async def test_wake_runs_a_routine_before_its_interval() -> None:
    supervisor = Supervisor()
    wake = asyncio.Event()
    ran = asyncio.Event()

    async def step() -> None:
        ran.set()

    supervisor.every("woken", 3600, step, wake=wake)
    wake.set()
    await asyncio.wait_for(ran.wait(), timeout=10)
    await supervisor.stop()


async def test_a_failed_task_is_reported_and_stop_awaits_the_rest() -> None:
    supervisor = Supervisor()
    before = failures("doomed")

    async def doomed() -> None:
        raise ValueError("no")

    release = asyncio.Event()
    finished = asyncio.Event()

    async def slow() -> None:
        await release.wait()
        finished.set()

    supervisor.spawn("doomed", doomed())
    supervisor.spawn("slow", slow())
    supervisor.every("tick", 0.01, lambda: asyncio.sleep(0))
    await eventually(lambda: asyncio.sleep(0, failures("doomed") - before == 1), timeout=10,
                     what="the failed task being counted")
    assert supervisor.running == ["slow", "tick"]
    asyncio.get_running_loop().call_later(0.05, release.set)
    await supervisor.stop(grace=10)
    assert finished.is_set(), "stop returned before the task it was given grace for"
    assert supervisor.running == []
    with pytest.raises(RuntimeError):
        supervisor.spawn("late", asyncio.sleep(0))


async def test_stop_cancels_a_task_that_outlives_its_grace() -> None:
    supervisor = Supervisor()
    task = supervisor.spawn("stuck", asyncio.sleep(3600))
    await supervisor.stop(grace=0.01)
    assert task.cancelled()


async def test_stopping_a_routine_lets_the_step_in_progress_finish() -> None:
    """A result write cancelled while queued would never run: stop waits for the step instead."""
    supervisor = Supervisor()
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def write() -> None:
        started.set()
        await release.wait()
        finished.append(True)

    routine = supervisor.every("writer", 0.001, write)
    await asyncio.wait_for(started.wait(), timeout=10)
    stopping = asyncio.create_task(routine.stop(timeout=10))
    await asyncio.sleep(0)
    release.set()
    await stopping
    assert finished == [True] and not routine.running
    await supervisor.stop()


async def test_a_step_that_outlasts_the_stop_timeout_is_cancelled() -> None:
    supervisor = Supervisor()
    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.sleep(3600)

    routine = supervisor.every("stuck", 0.001, stuck)
    await asyncio.wait_for(started.wait(), timeout=10)
    await routine.stop(timeout=0.01)
    assert not routine.running
    await supervisor.stop()
