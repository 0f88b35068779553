"""The sync-to-async bridge the PostgreSQL store runs the shared SQL through."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from relay.store.bridge import await_, run_sync

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def double_later(value: int) -> int:
    await asyncio.sleep(0.001)
    return value * 2


async def fail_later(message: str) -> None:
    await asyncio.sleep(0.001)
    raise ValueError(message)


def statements(count: int, start: int) -> list[int]:
    """What a store function does: several awaited steps, plain code in between."""
    return [await_(double_later(start + n)) for n in range(count)]


async def test_sync_code_gets_each_awaited_result_in_turn() -> None:
    assert await run_sync(statements, 3, 10) == [20, 22, 24]


async def test_interleaved_units_of_work_each_see_their_own_results() -> None:
    results = await asyncio.gather(*(run_sync(statements, 5, n * 100) for n in range(20)))
    assert results == [[2 * (n * 100 + k) for k in range(5)] for n in range(20)]


async def test_an_awaited_failure_is_raised_in_the_sync_code_which_may_handle_it() -> None:
    def handled() -> str:
        try:
            await_(fail_later("refused"))
        except ValueError as exc:
            return f"handled {exc}"
        return "not raised"

    assert await run_sync(handled) == "handled refused"


async def test_a_failure_of_the_sync_code_reaches_the_awaiting_task() -> None:
    def failing() -> None:
        await_(double_later(1))
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await run_sync(failing)


async def test_cancelling_the_task_cancels_the_sync_code_where_it_waits() -> None:
    seen: list[str] = []

    def waits_forever() -> None:
        try:
            await_(asyncio.sleep(3600))
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise

    task = asyncio.create_task(run_sync(waits_forever))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled inside"]


async def test_context_variables_follow_the_task() -> None:
    request_id.set("abc")
    assert await run_sync(request_id.get) == "abc"


def test_await_outside_run_sync_is_refused() -> None:
    coroutine = double_later(1)
    with pytest.raises(RuntimeError, match="outside run_sync"):
        await_(coroutine)
    coroutine.close()
