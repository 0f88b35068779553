"""Delivery benchmarks: the relay and its receivers in separate processes, on a real broker.

    make bench                      # all scenarios, writes bench/results/<date>.json and latest.md
    python -m bench.run --only single,batched --scale 0.2

Every load is bounded in count and time and stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.harness import Receiver, RelayProcess, free_port, produce

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "compare": ("ratio_to_naive", ">=", 10),
    "single": ("deliveries_per_s", ">=", 2000),
    "batched": ("events_per_s", ">=", 30000),
    "latency": ("p99_ms", "<", 200),
    "isolation": ("isolation_ratio", ">=", 0.9),
    "backlog": ("peak_rss_mb", "<", 400),
}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_events(receivers: list[Receiver], total: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            stats = [await r.stats(session) for r in receivers]
            if sum(s["events"] for s in stats) >= total or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.25)


class Scenario:
    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir

    async def throughput(self, name: str, events: int, max_batch: int, receivers: int = 1,
                         hanging: int = 0, keys: int = 10000, timeout: float = 300) -> dict[str, Any]:
        """Register, stop the relay, produce everything, restart, time the drain."""
        healthy = [await Receiver(free_port()).start() for _ in range(receivers - hanging)]
        stuck = [await Receiver(free_port(), ["--hang"]).start() for _ in range(hanging)]
        relay = RelayProcess(self.bootstrap, self.workdir / name, delivery_timeout="60s")
        try:
            await relay.start()
            await relay.register(healthy + stuck, max_batch)
            relay.stop()
            await produce(self.bootstrap, relay.topic, events, keys)
            await relay.start()
            relay.profile(8)
            cpu0, _ = relay.usage()
            stats = await wait_events(healthy, events * len(healthy), timeout)
            cpu1, rss = relay.usage()
        finally:
            relay.stop()
            for r in healthy + stuck:
                r.stop()
        delivered = sum(s["events"] for s in stats)
        requests = sum(s["requests"] for s in stats)
        span = max(s["last"] for s in stats) - min(s["first"] for s in stats if s["first"])
        latencies = [lat for s in stats for lat in s["latencies_ms"]]
        return {
            "events": delivered, "requests": requests, "seconds": round(span, 3),
            "deliveries_per_s": round(requests / span), "events_per_s": round(delivered / span),
            "p50_ms": round(percentile(latencies, 0.5), 1), "p99_ms": round(percentile(latencies, 0.99), 1),
            "max_ms": round(max(latencies), 1),
            "cpu_s_per_1000_deliveries": round((cpu1 - cpu0) / requests * 1000, 3),
            "peak_rss_mb": round(rss / 2**20, 1), "complete": delivered >= events * len(healthy),
            "note": "latency includes time queued in Kafka: events were produced before the relay started",
        }

    async def compare(self, scale: float) -> dict[str, Any]:
        """Single-event POSTs, side by side in one run: the relay, a naive relay, and the ceiling."""
        relay = await self.throughput("compare-relay", int(20000 * scale), max_batch=1)
        receiver = await Receiver(free_port()).start()
        try:
            ceiling = await _run_json(sys.executable, "-m", "bench.baseline", "ceiling", "--url", receiver.url,
                                      "--events", str(int(20000 * scale)))
            topic = f"naive-{int(time.time())}"
            naive_events = int(3000 * scale)
            await produce(self.bootstrap, topic, naive_events, 10000)
            naive = await _run_json(sys.executable, "-m", "bench.baseline", "naive", "--bootstrap", self.bootstrap,
                                    "--topic", topic, "--url", receiver.url, "--events", str(naive_events))
        finally:
            receiver.stop()
        return {
            "relay_per_s": relay["deliveries_per_s"], "naive_per_s": naive["per_s"],
            "ceiling_per_s": ceiling["per_s"],
            "ratio_to_naive": round(relay["deliveries_per_s"] / naive["per_s"], 2),
            "ratio_to_ceiling": round(relay["deliveries_per_s"] / ceiling["per_s"], 3),
        }

    async def dashboards(self, scale: float) -> dict[str, Any]:
        """Ingest rate with 5 dashboards streaming activity, against none, in the same run."""
        quiet = await self._ingest_rate("dash-quiet", int(100000 * scale), streams=0)
        busy = await self._ingest_rate("dash-busy", int(100000 * scale), streams=5)
        return {"ingest_per_s_no_dashboards": quiet, "ingest_per_s_5_dashboards": busy,
                "ratio": round(busy / quiet, 3)}

    async def _ingest_rate(self, name: str, events: int, streams: int) -> float:
        receiver = await Receiver(free_port()).start()
        relay = RelayProcess(self.bootstrap, self.workdir / name)
        try:
            await relay.start()
            key = await relay.register([receiver], max_batch=100)
            relay.stop()
            await produce(self.bootstrap, relay.topic, events, 10000)
            await relay.start()
            async with aiohttp.ClientSession() as session:
                readers = [asyncio.create_task(_read_stream(session, f"http://{relay.api}/v1/activity/stream", key))
                           for _ in range(streams)]
                started = time.monotonic()
                jobs = 0
                while jobs < events and time.monotonic() - started < 300:
                    await asyncio.sleep(0.5)
                    jobs = await _jobs_created(session, relay.api)
                rate = jobs / (time.monotonic() - started)
                for reader in readers:
                    reader.cancel()
        finally:
            relay.stop()
            receiver.stop()
        return round(rate)

    async def single(self, scale: float) -> dict[str, Any]:
        return await self.throughput("single", int(20000 * scale), max_batch=1)

    async def batched(self, scale: float) -> dict[str, Any]:
        return await self.throughput("batched", int(300000 * scale), max_batch=100)

    async def batched_1000(self, scale: float) -> dict[str, Any]:
        return await self.throughput("batched1000", int(300000 * scale), max_batch=1000)

    async def latency(self, scale: float) -> dict[str, Any]:
        """Events produced live at 500/s, one per POST: event timestamp to receipt."""
        receiver = await Receiver(free_port()).start()
        relay = RelayProcess(self.bootstrap, self.workdir / "latency")
        count = int(10000 * scale)
        try:
            await relay.start()
            await relay.register([receiver], max_batch=1)
            await asyncio.sleep(1.5)
            await produce(self.bootstrap, relay.topic, count, 10000, rate=500)
            [stats] = await wait_events([receiver], count, 60)
        finally:
            relay.stop()
            receiver.stop()
        lat = stats["latencies_ms"]
        return {"events": stats["events"], "rate_per_s": 500, "p50_ms": round(percentile(lat, 0.5), 1),
                "p99_ms": round(percentile(lat, 0.99), 1), "max_ms": round(max(lat), 1),
                "mean_ms": round(statistics.fmean(lat), 1), "latencies_ms": lat}

    async def isolation(self, scale: float) -> dict[str, Any]:
        """Throughput to 9 healthy endpoints while a tenth hangs, as a ratio to all-healthy."""
        events = int(3000 * scale)
        base = await self.throughput("iso-healthy", events, 1, receivers=9)
        hung = await self.throughput("iso-hanging", events, 1, receivers=10, hanging=1)
        return {"all_healthy_deliveries_per_s": base["deliveries_per_s"],
                "one_hanging_deliveries_per_s": hung["deliveries_per_s"],
                "isolation_ratio": round(hung["deliveries_per_s"] / base["deliveries_per_s"], 3),
                "complete": hung["complete"]}

    async def backlog(self, scale: float) -> dict[str, Any]:
        """Peak RSS while a dead endpoint has a large backlog waiting in the store."""
        count = int(1_000_000 * scale)
        receiver = await Receiver(free_port(), ["--status", "503"]).start()
        relay = RelayProcess(self.bootstrap, self.workdir / "backlog", retry_schedule="0,1h",
                             circuit_failure_threshold=3)
        started = time.monotonic()
        try:
            await relay.start()
            await relay.register([receiver], max_batch=100)
            relay.stop()
            await produce(self.bootstrap, relay.topic, count, 10000)
            produced = time.monotonic()
            await relay.start()
            jobs = 0
            async with aiohttp.ClientSession() as session:
                while jobs < count and time.monotonic() - produced < 900:
                    jobs = await _jobs_created(session, relay.api)
                    await asyncio.sleep(1)
            ingested = time.monotonic()
            _, rss = relay.usage()
        finally:
            relay.stop()
            receiver.stop()
        return {"backlog_jobs": jobs, "peak_rss_mb": round(rss / 2**20, 1),
                "ingest_events_per_s": round(jobs / (ingested - produced)),
                "produce_seconds": round(produced - started, 1)}


async def _read_stream(session: aiohttp.ClientSession, url: str, key: str) -> None:
    async with session.get(url, headers={"authorization": f"Bearer {key}"}) as response:
        async for _ in response.content.iter_any():
            pass


async def _jobs_created(session: aiohttp.ClientSession, api: str) -> int:
    async with session.get(f"http://{api}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith("relay_jobs_created_total "):
                return int(float(line.split()[1]))
    return 0


async def _run_json(*command: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    if proc.returncode:
        raise RuntimeError(f"{command} exited {proc.returncode}")
    return orjson.loads(out.strip().splitlines()[-1])


def summarize(name: str, result: dict[str, Any]) -> str:
    target = TARGETS.get(name)
    verdict = ""
    if target:
        key, op, goal = target
        value = result.get(key)
        ok = value is not None and (value >= goal if op == ">=" else value < goal)
        verdict = f"{key} {value} (target {op} {goal}: {'met' if ok else 'MISSED'})"
    shown = {k: v for k, v in result.items() if k not in ("latencies_ms", "note")}
    return f"| {name} | {verdict} | {', '.join(f'{k}={v}' for k, v in shown.items())} |"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only",
                        default="compare,single,batched,batched_1000,latency,isolation,backlog,dashboards")
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply every event count.")
    args = parser.parse_args()
    bootstrap = os.environ.get("RELAY_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    scenario = Scenario(bootstrap, workdir)
    runs: dict[str, Callable[[float], Awaitable[dict[str, Any]]]] = {
        name: getattr(scenario, name) for name in args.only.split(",")
    }
    results: dict[str, Any] = {}
    try:
        for name, run in runs.items():
            print(f"== {name}", flush=True)
            results[name] = await run(args.scale)
            print(summarize(name, results[name]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    meta = {"when": stamp, "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "python": platform.python_version(), "scale": args.scale}
    lat = results.get("latency", {}).pop("latencies_ms", None)
    (RESULTS / f"{stamp}.json").write_bytes(orjson.dumps({"meta": meta, "results": results},
                                                          option=orjson.OPT_INDENT_2))
    table = ["| scenario | headline | figures |", "|---|---|---|"]
    table += [summarize(name, result) for name, result in results.items()]
    (RESULTS / "latest.md").write_text(f"Run {stamp} on {meta['machine']}, scale {args.scale}\n\n"
                                       + "\n".join(table) + "\n")
    if lat:
        (RESULTS / f"{stamp}-latency.json").write_bytes(orjson.dumps(lat))
    print("\n".join(table))


if __name__ == "__main__":
    asyncio.run(main())
