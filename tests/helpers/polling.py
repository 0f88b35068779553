"""The one polling helper: wait for a condition, and fail with a message that says what never came."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 15.0, what: str = "condition",
                     interval: float = 0.2) -> T:
    """Call ``check`` until it returns something truthy, and return that; after ``timeout``
    seconds fail, naming ``what`` and the last value seen."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not met in {timeout:g}s (last value: {str(last)[:500]})")
        await asyncio.sleep(interval)
