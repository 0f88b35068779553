"""Processes for benchmarks: the relay (``relay serve``) and receivers, each in its own process."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from relay.samples import sample_event

ADMIN_KEY = "bench-admin-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat from its third field on (the command name may hold spaces)."""
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()


def reaped_children_cpu(pid: int) -> float:
    """CPU seconds of the process's children that have exited and been waited for."""
    fields = _stat(pid)
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, peak RSS in bytes) of a live process, from /proc."""
    fields = _stat(pid)
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    peak = 0
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cpu, peak


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [pid, *(p for child in children for p in process_tree(int(child)))]


@dataclass
class Receiver:
    port: int
    mode: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def spawn(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.receiver", "--port", str(self.port),
                                      *self.mode])

    async def start(self) -> Receiver:
        self.spawn()
        await wait_http(f"http://127.0.0.1:{self.port}/stats")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:  # a --hang receiver waits on its requests
                self.proc.kill()
                self.proc.wait(5)

    async def stats(self, session: aiohttp.ClientSession, latencies: bool = True) -> dict[str, Any]:
        query = "" if latencies else "?latencies=0"
        async with session.get(f"http://127.0.0.1:{self.port}/stats{query}") as response:
            return orjson.loads(await response.read())

    async def set_status(self, session: aiohttp.ClientSession, status: int) -> None:
        async with session.post(f"http://127.0.0.1:{self.port}/control", data=orjson.dumps({"status": status})):
            pass

    async def handshakes(self, session: aiohttp.ClientSession) -> list[dict[str, str]]:
        async with session.get(f"http://127.0.0.1:{self.port}/handshakes") as response:
            return orjson.loads(await response.read())


async def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(url)
            await asyncio.sleep(0.1)


class RelayProcess:
    def __init__(self, bootstrap: str, data_dir: Path, **settings: Any) -> None:
        """``settings`` become RELAY_* variables: ``retry_schedule="0,1s"``."""
        tag = uuid.uuid4().hex[:8]
        self.topic = f"bench-{tag}"
        self.api = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.update({
            "RELAY_KAFKA_BOOTSTRAP": bootstrap, "RELAY_TOPICS": self.topic,
            "RELAY_CONSUMER_GROUP": f"bench-{tag}", "RELAY_DATA_DIR": str(data_dir),
            "RELAY_API_LISTEN": self.api, "RELAY_ADMIN_KEY": ADMIN_KEY,
            "RELAY_URL_ALLOWLIST": "127.0.0.1", "RELAY_LOG_LEVEL": "warning",
        })
        env.update({f"RELAY_{k.upper()}": str(v) for k, v in settings.items()})
        self.env = env
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def sibling(self, data_dir: Path) -> RelayProcess:
        """Another instance of the same relay: same topic, group, store and keys; its own API."""
        other = RelayProcess.__new__(RelayProcess)
        other.topic, other.api, other.data_dir, other.proc = self.topic, f"127.0.0.1:{free_port()}", data_dir, None
        other.env = {**self.env, "RELAY_API_LISTEN": other.api, "RELAY_DATA_DIR": str(data_dir)}
        return other

    def spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "relay.cli", "serve"]
        with (self.data_dir / "relay.log").open("ab") as log:
            self.proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def profile(self, seconds: int) -> None:
        """With BENCH_PROFILE=<dir>, attach py-spy for ``seconds``: collapsed stacks (.txt), or a
        flame graph (.svg) with BENCH_PROFILE_FORMAT=flamegraph; BENCH_PROFILE_GIL=1 samples only the
        thread holding the GIL, which is what bounds one process."""
        profile_dir = os.environ.get("BENCH_PROFILE")
        if profile_dir and self.proc is not None:
            form = os.environ.get("BENCH_PROFILE_FORMAT", "raw")
            suffix = "svg" if form == "flamegraph" else "txt"
            out = Path(profile_dir) / f"{self.data_dir.name}-{int(time.time())}.{suffix}"
            spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            gil = ["--gil"] if os.environ.get("BENCH_PROFILE_GIL") == "1" else []
            subprocess.Popen([spy, "record", "--format", form, "-r", "250", "-d", str(seconds), *gil,
                              "-o", str(out), "--pid", str(self.proc.pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def start(self) -> None:
        self.spawn()
        await wait_http(f"http://{self.api}/readyz", 60)

    def usage(self) -> tuple[float, int]:
        """CPU seconds and peak RSS of the relay: with ``workers``, its parent and workers summed."""
        assert self.proc is not None
        usages = [proc_usage(pid) for pid in process_tree(self.proc.pid)]
        return sum(cpu for cpu, _ in usages), sum(rss for _, rss in usages)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    async def call(self, session: aiohttp.ClientSession, method: str, path: str, key: str,
                   body: Any = None) -> Any:
        async with session.request(method, f"http://{self.api}{path}", json=body,
                                   headers={"authorization": f"Bearer {key}"}) as response:
            data = await response.json()
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {data}")
            return data

    async def register(self, receivers: list[Receiver], max_batch: int, mid: str = "777",
                       per_receiver: int = 1, filtered_subscriptions: int = 0) -> str:
        """One account; ``per_receiver`` verified callbacks per receiver (distinct paths), each
        subscribed to every send event. With ``filtered_subscriptions``, that many subscriptions
        instead, each with a definitionKey filter (see ``produce``), up to 200 per callback (the
        relay's limit) on as many callbacks as that takes. Returns the account's API key."""
        async with aiohttp.ClientSession() as session:
            account = await self.call(session, "POST", "/v1/accounts", ADMIN_KEY,
                                      {"name": "bench", "mid": mid})
            key = account["apiKey"]
            if filtered_subscriptions:
                for n, start in enumerate(range(0, filtered_subscriptions, 200)):
                    keys = range(start, min(start + 200, filtered_subscriptions))
                    await self._register_one(session, key, receivers[0], f"{receivers[0].url}/{n}", max_batch, keys)
                return key
            for receiver in receivers:
                for n in range(per_receiver):
                    await self._register_one(session, key, receiver, f"{receiver.url}/{n}", max_batch)
        return key

    async def _register_one(self, session: aiohttp.ClientSession, key: str, receiver: Receiver, url: str,
                            max_batch: int, filter_keys: range | None = None) -> None:
        """A verified callback with one subscription to every send event, or one subscription per
        definitionKey in ``filter_keys``."""
        cb = await self.call(session, "POST", "/v1/callbacks", key,
                             {"name": url.rsplit(":", 1)[1], "url": url, "maxBatchSize": max_batch})
        found: list[dict[str, str]] = []
        for _ in range(100):
            found = [h for h in await receiver.handshakes(session) if h["callbackId"] == cb["id"]]
            if found:
                break
            await asyncio.sleep(0.05)
        await self.call(session, "POST", f"/v1/callbacks/{cb['id']}/verify", key,
                        {"verificationKey": found[0]["verificationKey"]})
        if filter_keys is None:
            await self.call(session, "POST", "/v1/subscriptions", key, {
                "name": f"all-{cb['id']}", "callbackId": cb["id"],
                "eventCategoryTypes": ["TransactionalSendEvents.*"],
            })
            return
        for start in range(0, len(filter_keys), 50):  # 50 at a time: bursts share routing reloads
            await asyncio.gather(*(self.call(session, "POST", "/v1/subscriptions", key, {
                "name": f"key-{n}", "callbackId": cb["id"],
                "eventCategoryTypes": ["TransactionalSendEvents.EmailSent"], "filters": [f"definitionKey=key-{n}"],
            }) for n in filter_keys[start:start + 50]))


async def produce(bootstrap: str, topic: str, count: int, keys: int, rate: float = 0.0, pad: int = 0,
                  definition_keys: int = 0) -> None:
    """Send ``count`` events; with ``rate`` > 0, paced, each stamped with its send time. ``pad`` adds
    an unknown field of that many bytes (body size); ``definition_keys`` > 0 cycles definitionKey
    through ``key-0`` … (what filtered subscriptions match on)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        base = sample_event("EmailSent", mid="777", subscriber_key="x")
        if pad:
            base["padding"] = "p" * pad
        started = time.monotonic()
        pending = []
        for i in range(count):
            base["timestampUTC"] = int(time.time() * 1000)
            base["info"]["subscriberKey"] = key = f"sub-{i % keys:06d}"
            base["info"]["messageKey"] = f"m{i}"
            if definition_keys:
                base["definitionKey"] = f"key-{i % definition_keys}"
            pending.append(await producer.send(topic, orjson.dumps(base), key=key.encode()))
            if rate:
                delay = started + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
