"""``relay serve`` as a real child process, for crash and signal tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from relay.config import SETTINGS


def env_for(values: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    by_name = {s.name: s for s in SETTINGS}
    for name, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        env[by_name[name].env] = text
    return env


class RelayProcess:
    def __init__(self, values: dict[str, Any], log_path: Path) -> None:
        self.values = values
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://{values['api_listen']}"

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "serve"], env=env_for(self.values),
                stdout=log, stderr=subprocess.STDOUT,
            )

    async def start(self, timeout: float = 30.0) -> None:
        """Spawn and wait until /readyz answers 200."""
        self.spawn()
        assert self.proc is not None
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"relay exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    async with session.get(self.base + "/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"relay not ready; see {self.log_path}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: self.proc.wait(timeout=timeout))  # type: ignore[union-attr]

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
