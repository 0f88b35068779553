"""Delivery benchmarks: the relay and its receivers in separate processes, on a real broker.

    make bench                      # all scenarios, writes bench/results/<date>.json and latest.md
    python -m bench.run --only single,batched --scale 0.2

Every load is bounded in count and time and stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg

from bench.harness import Receiver, RelayProcess, free_port, proc_usage, process_tree, produce, reaped_children_cpu
from bench.plot import plot_curve, plot_latencies, plot_rss

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("compare", "single", "batched", "batched_1000", "fanout", "isolation", "retry_storm",
             "backlog_drain", "ordering", "latency", "latency_batched", "api_under_load", "dashboards", "instances",
             "workers", "cost_callbacks", "cost_subscriptions", "cost_body", "cost_backlog", "cost_store")
PG_SH = Path(__file__).resolve().parents[1] / "deploy" / "postgres" / "pg.sh"
# The targets for this 2-core machine: (figure, comparison, goal).
TARGETS: dict[str, list[tuple[str, str, float]]] = {
    "compare": [("ratio_to_ceiling", ">=", 0.5), ("ratio_to_naive", ">=", 10)],
    "batched": [("events_per_s", ">=", 50000), ("ratio_to_bridge", ">=", 0.5)],
    "batched_1000": [("events_per_s", ">=", 60000), ("ratio_to_bridge", ">=", 0.5)],
    "latency": [("p99_ms", "<", 40)],
    "latency_batched": [("p99_ms", "<", 100)],
    "isolation": [("isolation_ratio", ">=", 0.95)],
    "backlog_drain": [("peak_rss_mb", "<=", 200)],
    "instances": [("postgres_over_sqlite", ">=", 0.8), ("incomplete_runs", "==", 0)],
    "api_under_load": [("busy_p99_ms", "<", 100)],
    "ordering": [("order_violations", "==", 0)],
    "retry_storm": [("order_violations", "==", 0)],
}
# Long lists kept out of the JSON and the table; latencies feed the plot.
BULKY = ("latencies_ms",)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_events(receivers: list[Receiver], total: int, timeout: float) -> list[dict[str, Any]]:
    """Poll until the receivers together acknowledged ``total`` events; then fetch latencies."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            stats = [await r.stats(session, latencies=False) for r in receivers]
            if sum(s["events"] for s in stats) >= total or time.monotonic() > deadline:
                return [await r.stats(session) for r in receivers]
            await asyncio.sleep(0.25)


def figures(stats: list[dict[str, Any]], expected: int, cpu_s: float, rss: int) -> dict[str, Any]:
    """The per-scenario figures the issue asks for, from receiver stats and relay usage."""
    delivered = sum(s["events"] for s in stats)
    requests = sum(s["requests"] for s in stats)
    span = max(s["last"] for s in stats) - min(s["first"] for s in stats if s["first"])
    latencies = [lat for s in stats for lat in s["latencies_ms"]]
    arrivals = sorted(t for s in stats for t in s["arrivals"])
    start = arrivals[0]
    # A retry schedule's tail (one event failing eight times in a row) can stretch the total span;
    # the time until 99 % of POSTs succeeded shows the rate the bulk of the load moved at.
    span_99 = max(arrivals[int(0.99 * (len(arrivals) - 1))] - start, 1e-3)
    return {
        "events": delivered, "requests": requests, "attempts": sum(s["attempts"] for s in stats),
        "seconds": round(span, 3),
        "deliveries_per_s": round(requests / span), "events_per_s": round(delivered / span),
        "seconds_to_99pct": round(span_99, 3), "deliveries_per_s_to_99pct": round(0.99 * requests / span_99),
        "p50_ms": round(percentile(latencies, 0.5), 1), "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "cpu_s_per_1000_deliveries": round(cpu_s / max(requests, 1) * 1000, 3),
        "cpu_s_per_1000_events": round(cpu_s / max(delivered, 1) * 1000, 3),
        "peak_rss_mb": round(rss / 2**20, 1), "complete": delivered >= expected,
        "duplicates": sum(s["duplicates"] for s in stats),
        "order_violations": sum(s["order_violations"] for s in stats),
        "latencies_ms": latencies,
    }


class Scenario:
    def __init__(self, bootstrap: str, workdir: Path, stamp: str) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.stamp = stamp  # names this run's plots

    async def throughput(self, name: str, events: int, max_batch: int, *, receivers: int = 1,
                         per_receiver: int = 1, hanging: int = 0, fail_rate: float = 0.0, keys: int = 10000,
                         timeout: float = 300, pad: int = 0, filtered: int = 0, history: int = 0,
                         **settings: Any) -> dict[str, Any]:
        """Register, stop the relay, produce everything, restart, time the drain. ``history``: events
        (and a delivered job each) written into the store first, as if it had been running a while.

        Latency therefore includes the time events waited in Kafka before the relay started."""
        mode = ["--fail-rate", str(fail_rate)] if fail_rate else []
        healthy = [await Receiver(free_port(), mode).start() for _ in range(receivers - hanging)]
        stuck = [await Receiver(free_port(), ["--hang"]).start() for _ in range(hanging)]
        relay = RelayProcess(self.bootstrap, self.workdir / name, delivery_timeout="60s", **settings)
        expected = events * len(healthy) * per_receiver
        try:
            await relay.start()
            await relay.register(healthy + stuck, max_batch, per_receiver=per_receiver,
                                 filtered_subscriptions=filtered)
            relay.stop()
            if history:
                await asyncio.to_thread(fill_store, relay.data_dir / "relay.db", history)
            await produce(self.bootstrap, relay.topic, events, keys, pad=pad, definition_keys=filtered)
            await relay.start()
            relay.profile(8)
            cpu0, _ = relay.usage()
            stats = await wait_events(healthy, expected, timeout)
            cpu1, rss = relay.usage()
        finally:
            relay.stop()
            for r in healthy + stuck:
                r.stop()
        return figures(stats, expected, cpu1 - cpu0, rss)

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
            "relay_cpu_s_per_1000_deliveries": relay["cpu_s_per_1000_deliveries"],
        }

    async def single(self, scale: float) -> dict[str, Any]:
        """(1) One event per POST, 10,000 keys."""
        return await self.throughput("single", int(20000 * scale), max_batch=1)

    async def batched(self, scale: float) -> dict[str, Any]:
        """(2a) Up to 100 events per POST, beside the bare bridge on the same backlog."""
        return await self._beside_bridge("batched", int(300000 * scale), max_batch=100)

    async def batched_1000(self, scale: float) -> dict[str, Any]:
        """(2b) Up to 1,000 events per POST, beside the bare bridge on the same backlog."""
        return await self._beside_bridge("batched1000", int(300000 * scale), max_batch=1000)

    async def workers(self, scale: float) -> dict[str, Any]:
        """``relay serve --workers N`` on SQLite: the batched drain (up to 100 per POST) with one
        worker, then two, beside the bare bridge; CPU and RSS are the whole process tree's."""
        events = int(300000 * scale)
        results = {"one": await self.throughput("workers-1", events, max_batch=100),
                   "two": await self.throughput("workers-2", events, max_batch=100, workers=2)}
        bridge = await self.bridge_rate(events, 100)
        keep = ("events_per_s", "p99_ms", "cpu_s_per_1000_events", "peak_rss_mb", "duplicates", "order_violations")
        flat = {f"{name}_{key}": run.get(key) for name, run in results.items() for key in keep}
        return {**flat, "two_over_one": round(results["two"]["events_per_s"] / results["one"]["events_per_s"], 3),
                "bridge_events_per_s": bridge,
                "two_ratio_to_bridge": round(results["two"]["events_per_s"] / bridge, 3)}

    async def _beside_bridge(self, name: str, events: int, max_batch: int) -> dict[str, Any]:
        relay = await self.throughput(name, events, max_batch=max_batch)
        bridge = await self.bridge_rate(events, max_batch)
        return {**relay, "bridge_events_per_s": bridge,
                "ratio_to_bridge": round(relay["events_per_s"] / bridge, 3)}

    async def bridge_rate(self, events: int, max_batch: int) -> int:
        """The bare Kafka→HTTP bridge (bench.baseline bridge) on a backlog like the relay's, timed by
        the receiver the same way: first to last POST received."""
        receiver = await Receiver(free_port()).start()
        try:
            topic = f"bridge-{uuid.uuid4().hex[:8]}"
            await produce(self.bootstrap, topic, events, 10000)
            await _run_json(sys.executable, "-m", "bench.baseline", "bridge", "--bootstrap", self.bootstrap,
                            "--topic", topic, "--url", receiver.url, "--events", str(events),
                            "--max-batch", str(max_batch))
            [stats] = await wait_events([receiver], events, 60)
        finally:
            receiver.stop()
        return round(stats["events"] / (stats["last"] - stats["first"]))

    async def fanout(self, scale: float) -> dict[str, Any]:
        """(3) Every event to 50 callbacks (10 paths on each of 5 receiver processes), one per POST."""
        return await self.throughput("fanout", int(2000 * scale), max_batch=1, receivers=5, per_receiver=10)

    async def isolation(self, scale: float) -> dict[str, Any]:
        """(4) Ten endpoints, one per POST: the rate each healthy endpoint gets while one of them hangs,
        as a ratio to its rate when all ten are healthy (same events, same number of jobs)."""
        events = int(3000 * scale)
        base = await self.throughput("iso-healthy", events, 1, receivers=10)
        hung = await self.throughput("iso-hanging", events, 1, receivers=10, hanging=1)
        per_endpoint_base = base["deliveries_per_s"] / 10
        per_endpoint_hung = hung["deliveries_per_s"] / 9
        return {**hung, "all_healthy_deliveries_per_s": base["deliveries_per_s"],
                "per_healthy_endpoint_per_s": round(per_endpoint_hung),
                "per_endpoint_all_healthy_per_s": round(per_endpoint_base),
                "isolation_ratio": round(per_endpoint_hung / per_endpoint_base, 3)}

    async def retry_storm(self, scale: float) -> dict[str, Any]:
        """(5) 30 % of attempts answered 500, retried on a short schedule; order must hold."""
        return await self.throughput("retry", int(10000 * scale), max_batch=1, fail_rate=0.3,
                                     retry_schedule="0,0.1s,0.2s,0.5s,1s,2s,5s,10s,30s")

    async def ordering(self, scale: float) -> dict[str, Any]:
        """(7) One event per POST over 10,000 distinct keys against 10 hot keys (per-key FIFO)."""
        events = int(20000 * scale)
        spread = await self.throughput("order-spread", events, 1, keys=10000)
        hot = await self.throughput("order-hot", events, 1, keys=10)
        return {**hot, "distinct_keys_deliveries_per_s": spread["deliveries_per_s"],
                "hot_vs_distinct": round(hot["deliveries_per_s"] / spread["deliveries_per_s"], 3),
                "order_violations": hot["order_violations"] + spread["order_violations"]}

    async def latency(self, scale: float) -> dict[str, Any]:
        """Events produced live at 1,000/s, one per POST: event timestamp to receipt."""
        return await self._live("latency", int(20000 * scale), rate=1000, max_batch=1, timeout=60)

    async def _live(self, name: str, count: int, rate: int, max_batch: int, timeout: float) -> dict[str, Any]:
        receiver = await Receiver(free_port()).start()
        relay = RelayProcess(self.bootstrap, self.workdir / name)
        try:
            await relay.start()
            await relay.register([receiver], max_batch=max_batch)
            await asyncio.sleep(1.5)
            relay.profile(8)
            cpu0, _ = relay.usage()
            await produce(self.bootstrap, relay.topic, count, 10000, rate=rate)
            stats = await wait_events([receiver], count, timeout)
            cpu1, rss = relay.usage()
        finally:
            relay.stop()
            receiver.stop()
        return {"rate_per_s": rate, **figures(stats, count, cpu1 - cpu0, rss)}

    async def backlog_drain(self, scale: float) -> dict[str, Any]:
        """(6) An endpoint down while 1,000,000 jobs pile up in the store, then it recovers: peak RSS
        through both phases and the drain rate after recovery."""
        return await self._backlog("backlog", int(1_000_000 * scale))

    async def _backlog(self, name: str, count: int) -> dict[str, Any]:
        receiver = await Receiver(free_port(), ["--status", "503"]).start()
        relay = RelayProcess(self.bootstrap, self.workdir / name, circuit_failure_threshold=3,
                             circuit_cooldown_max="2s", retry_schedule=",".join(["0"] + ["2s"] * 500))
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
                _, rss_backlog = relay.usage()
                cpu0, _ = relay.usage()
                await receiver.set_status(session, 200)
            stats = await wait_events([receiver], count, 900)
            cpu1, rss = relay.usage()
        finally:
            relay.stop()
            receiver.stop()
        drained = figures(stats, count, cpu1 - cpu0, rss)
        return {**drained, "backlog_jobs": jobs, "peak_rss_mb_while_down": round(rss_backlog / 2**20, 1),
                "ingest_events_per_s": round(jobs / (ingested - produced)),
                "produce_seconds": round(produced - started, 1),
                "note": "latency counts from the event's timestamp, so it includes the outage"}

    async def instances(self, scale: float) -> dict[str, Any]:
        """Issue 9: batched throughput with 1, 2 and 3 instances on PostgreSQL (and 1 on SQLite),
        each instance's CPU, and the store write rate (events persisted per second) per instance."""
        events = int(200000 * scale)
        self.workdir.chmod(0o755)  # the server runs as the postgres user when the bench runs as root
        pg_home = self.workdir / "pg"
        pg_home.mkdir(mode=0o755)
        pg_env = {**os.environ, "PG_PORT": str(free_port()), "PG_HOME_DIR": str(pg_home)}
        await _pg("up", pg_env)
        base = await _pg("url", pg_env)
        results: dict[str, Any] = {}
        try:
            results["sqlite_1"] = await self._instances("sqlite", 1, events, "")
            for count in (1, 2, 3):
                results[f"postgres_{count}"] = await self._instances("postgres", count, events, base,
                                                                     pg_home / "data")
        finally:
            await _pg("down", pg_env)
        flat = {f"{name}_{key}": value for name, run in results.items() for key, value in run.items()}
        flat["postgres_over_sqlite"] = round(flat["postgres_1_events_per_s"] / flat["sqlite_1_events_per_s"], 3)
        # A run that did not deliver every event within its 180 s is a loss or a stall, not a slow run.
        flat["incomplete_runs"] = sum(1 for run in results.values() if not run["complete"])
        return flat

    async def _instances(self, store: str, count: int, events: int, pg_base: str,
                         pg_data: Path | None = None) -> dict[str, Any]:
        settings: dict[str, Any] = {"master_key": base64.b64encode(os.urandom(32)).decode()}
        if store == "postgres":
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(pg_base, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            settings["store_url"] = f"{pg_base}?options=-csearch_path%3D{schema}"
        receiver = await Receiver(free_port()).start()
        first = RelayProcess(self.bootstrap, self.workdir / f"{store}-{count}-0", **settings)
        relays = [first] + [first.sibling(self.workdir / f"{store}-{count}-{n}") for n in range(1, count)]
        try:
            await first.start()
            await first.register([receiver], max_batch=100)
            first.stop()
            await produce(self.bootstrap, first.topic, events, 10000)
            await asyncio.gather(*(relay.start() for relay in relays))
            first.profile(8)
            cpu0 = [relay.usage()[0] for relay in relays]
            server0 = server_cpu(pg_data)
            # A drain takes seconds here (60,000 events at scale 0.3); a longer wait only delays the
            # verdict on a run that lost events.
            [stats] = await wait_events([receiver], events, 180)
            cpu1 = [relay.usage()[0] for relay in relays]
            server1 = server_cpu(pg_data)
        finally:
            for relay in relays:
                relay.stop()
            receiver.stop()
        span = stats["last"] - stats["first"]
        rate = stats["events"] / span
        figures = {"events_per_s": round(rate), "store_writes_per_s_per_instance": round(rate / count),
                   "cpu_s_per_instance": [round(b - a, 1) for a, b in zip(cpu0, cpu1, strict=True)],
                   "delivered": stats["events"], "complete": stats["events"] >= events}
        if pg_data is not None:
            figures["server_cpu_s"] = round(server1 - server0, 1)
        return figures

    async def latency_batched(self, scale: float) -> dict[str, Any]:
        """Events produced live at 10,000/s, up to 100 per POST: event timestamp to receipt."""
        return await self._live("latency-batched", int(100000 * scale), rate=10000, max_batch=100, timeout=120)

    async def api_under_load(self, scale: float) -> dict[str, Any]:
        """GET /v1/callbacks, every 50 ms, while 200 callbacks x 1,000 events (up to 10 per POST) are
        delivered flat out, and then idle: what on-call sees when they open the console under load."""
        events = int(1000 * scale)
        receiver = await Receiver(free_port()).start()
        relay = RelayProcess(self.bootstrap, self.workdir / "api-load", delivery_timeout="60s")
        busy: list[float] = []
        idle: list[float] = []
        try:
            await relay.start()
            key = await relay.register([receiver], max_batch=10, per_receiver=200)
            relay.stop()
            await produce(self.bootstrap, relay.topic, events, 10000)
            await relay.start()
            done = asyncio.create_task(wait_events([receiver], events * 200, 600))
            async with aiohttp.ClientSession() as session:
                while not done.done():
                    busy.append(await _timed_get(session, f"http://{relay.api}/v1/callbacks", key))
                    await asyncio.sleep(0.05)
                for _ in range(40):
                    idle.append(await _timed_get(session, f"http://{relay.api}/v1/callbacks", key))
            [stats] = await done
        finally:
            relay.stop()
            receiver.stop()
        return {"busy_requests": len(busy), "busy_p50_ms": round(percentile(busy, 0.5), 1),
                "busy_p99_ms": round(percentile(busy, 0.99), 1), "busy_max_ms": round(max(busy), 1),
                "idle_p99_ms": round(percentile(idle, 0.99), 1), "events_delivered": stats["events"],
                "delivered_per_s": round(stats["events"] / max(stats["last"] - stats["first"], 1e-3))}

    async def cost_callbacks(self, scale: float) -> dict[str, Any]:
        """Cost curve: the same number of jobs spread over 1, 10, 100 and 1,000 callbacks (every
        event to every callback, up to 100 per POST)."""
        jobs = int(60000 * scale)
        points = []
        for count in (1, 10, 100, 1000):
            run = await self.throughput(f"callbacks-{count}", max(jobs // count, 20), max_batch=100,
                                        per_receiver=count, timeout=600)
            points.append((count, run["events_per_s"], run["cpu_s_per_1000_events"]))
        plot_curve(points, RESULTS / f"{self.stamp}-cost-callbacks.png",
                   f"Cost by number of callbacks, {jobs:,} jobs each run ({self.stamp})", "callbacks")
        return _curve("callbacks", points)

    async def cost_subscriptions(self, scale: float) -> dict[str, Any]:
        """Cost curve: one callback with 10, 1,000 and 10,000 subscriptions, each with a
        definitionKey filter; every event matches exactly one."""
        events = int(20000 * scale)
        points = []
        for count in (10, 1000, 10000):
            run = await self.throughput(f"subscriptions-{count}", events, max_batch=100, filtered=count,
                                        timeout=900)
            points.append((count, run["events_per_s"], run["cpu_s_per_1000_events"]))
        plot_curve(points, RESULTS / f"{self.stamp}-cost-subscriptions.png",
                   f"Cost by number of filtered subscriptions ({self.stamp})", "subscriptions with filters")
        return _curve("subscriptions", points)

    async def cost_body(self, scale: float) -> dict[str, Any]:
        """Cost curve: event bodies of 0.5, 5 and 50 KB, up to 100 per POST (fewer events when larger:
        the same 300 MB at most per run, times the scale)."""
        points = []
        for size in (500, 5000, 50000):
            events = min(int(60000 * scale), int(300e6 * scale / size))
            run = await self.throughput(f"body-{size}", events, max_batch=100, pad=max(0, size - 420))
            points.append((size / 1000, run["events_per_s"], run["cpu_s_per_1000_events"]))
        plot_curve(points, RESULTS / f"{self.stamp}-cost-body.png", f"Cost by event size ({self.stamp})",
                   "event body (KB)")
        return _curve("kb", points)

    async def cost_backlog(self, scale: float) -> dict[str, Any]:
        """Peak RSS against backlog size: 10k, 100k, 1M and 5M jobs (times the scale) pile up while the
        endpoint is down, then drain."""
        points = []
        results: dict[str, Any] = {}
        for jobs in (10_000, 100_000, 1_000_000, 5_000_000):
            count = int(jobs * scale)
            run = await self._backlog(f"backlog-{count}", count)
            points.append((count, max(run["peak_rss_mb"], run["peak_rss_mb_while_down"])))
            results[f"jobs_{count}_peak_rss_mb"] = points[-1][1]
            results[f"jobs_{count}_ingest_per_s"] = run["ingest_events_per_s"]
            results[f"jobs_{count}_drain_per_s"] = run["events_per_s"]
        plot_rss(points, RESULTS / f"{self.stamp}-cost-backlog.png", f"Peak RSS by backlog size ({self.stamp})")
        return results

    async def cost_store(self, scale: float) -> dict[str, Any]:
        """Cost curve: batched delivery (up to 100 per POST) into a SQLite store that already holds
        10k, 1M, 3M and 10M events with a delivered job each (times the scale): how the store's
        indexes cost more once they outgrow the page cache."""
        points = []
        for held in (10_000, 1_000_000, 3_000_000, 10_000_000):
            count = int(held * scale)
            run = await self.throughput(f"store-{count}", int(100000 * scale), max_batch=100, history=count,
                                        timeout=600)
            points.append((count, run["events_per_s"], run["cpu_s_per_1000_events"]))
        plot_curve(points, RESULTS / f"{self.stamp}-cost-store.png",
                   f"Cost by events already in the store ({self.stamp})", "events already stored")
        return _curve("stored", points)

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


def fill_store(path: Path, events: int) -> None:
    """Write ``events`` past events, each with a delivered job, straight into a relay's SQLite store:
    random message and subscriber keys as real traffic has, ids as this relay would make them for
    records of a topic it no longer reads."""
    import random
    import sqlite3

    from relay.events import RecordRef, event_id_for
    from relay.store.bulk import ValuesBulk
    from relay.store.sql import EVENT_COLUMNS

    rng = random.Random(7)
    body = orjson.dumps({"eventCategoryType": "TransactionalSendEvents.EmailSent", "info": {"to": "x" * 300}})
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        for start in range(0, events, 10_000):
            count = min(10_000, events - start)
            rows = [(event_id_for({}, RecordRef("history", offset % 6, offset)), "acct_history",
                     "TransactionalSendEvents.EmailSent", "777", int(now * 1000) - events + offset,
                     f"sub-{rng.randrange(100_000):05d}", f"{rng.getrandbits(64):016x}", body, "history",
                     offset % 6, offset, now - 3600, None) for offset in range(start, start + count)]
            conn.execute("BEGIN")
            ValuesBulk().insert(conn, "events", EVENT_COLUMNS, rows)
            conn.execute(
                "INSERT INTO jobs (event_seq, event_id, callback_id, ordering_key, partition, state, attempts, "
                "next_attempt_at, created_at, finished_at, topic) SELECT seq, id, 'cb_history', subscriber_key, "
                "partition, 'delivered', 1, received_at, received_at, received_at, topic FROM events WHERE seq > ?",
                (seq,))
            (seq,) = conn.execute("SELECT MAX(seq) FROM events").fetchone()
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _curve(unit: str, points: Sequence[tuple[float, float, float]]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for x, rate, cpu in points:
        label = f"{x:g}{unit}" if unit == "kb" else f"{unit}_{x:g}"
        figures[f"{label}_events_per_s"] = rate
        figures[f"{label}_cpu_s_per_1000_events"] = cpu
    return figures


async def _timed_get(session: aiohttp.ClientSession, url: str, key: str) -> float:
    started = time.perf_counter()
    async with session.get(url, headers={"authorization": f"Bearer {key}"}) as response:
        await response.read()
    return (time.perf_counter() - started) * 1000


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


def server_cpu(pg_data: Path | None) -> float:
    """CPU seconds the PostgreSQL server has used so far: its processes alive now, and the
    connections it has reaped (the postmaster's children's time). 0 without a server."""
    if pg_data is None:
        return 0.0
    postmaster = int((pg_data / "postmaster.pid").read_text().split()[0])
    alive = 0.0
    for pid in process_tree(postmaster):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a connection just closed
            alive += proc_usage(pid)[0]
    return reaped_children_cpu(postmaster) + alive


async def _pg(command: str, env: dict[str, str]) -> str:
    """deploy/postgres/pg.sh with durable settings (no PG_FAST): a fair store for the benchmark."""
    proc = await asyncio.create_subprocess_exec(str(PG_SH), command, env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"pg.sh {command} exited {proc.returncode}")
    return out.decode().strip()


async def _run_json(*command: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    if proc.returncode:
        raise RuntimeError(f"{command} exited {proc.returncode}")
    return orjson.loads(out.strip().splitlines()[-1])


def check(result: dict[str, Any], key: str, op: str, goal: float) -> bool:
    value = result.get(key)
    if value is None:
        return False
    comparisons = {">=": value >= goal, "<=": value <= goal, "<": value < goal, "==": value == goal}
    return comparisons[op]


def summarize(name: str, result: dict[str, Any]) -> str:
    verdicts = [f"{key} {result.get(key)} (target {op} {goal}: {'met' if check(result, key, op, goal) else 'MISSED'})"
                for key, op, goal in TARGETS.get(name, [])]
    shown = {k: v for k, v in result.items() if k not in (*BULKY, "note")}
    return f"| {name} | {'; '.join(verdicts)} | {', '.join(f'{k}={v}' for k, v in shown.items())} |"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply every event count.")
    args = parser.parse_args()
    bootstrap = os.environ.get("RELAY_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    scenario = Scenario(bootstrap, workdir, stamp)
    runs: dict[str, Callable[[float], Awaitable[dict[str, Any]]]] = {
        name: getattr(scenario, name) for name in args.only.split(",")
    }
    results: dict[str, Any] = {}
    latencies: dict[str, list[float]] = {}
    try:
        for name, run in runs.items():
            print(f"== {name}", flush=True)
            try:
                results[name] = await run(args.scale)
            except Exception as exc:  # one broken scenario must not cost the others' figures
                traceback.print_exc()
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            if "latencies_ms" in results[name]:
                latencies[name] = results[name].pop("latencies_ms")
            print(summarize(name, results[name]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {"when": stamp, "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "python": platform.python_version(), "scale": args.scale}
    (RESULTS / f"{stamp}.json").write_bytes(orjson.dumps({"meta": meta, "results": results},
                                                          option=orjson.OPT_INDENT_2))
    table = ["| scenario | targets | figures |", "|---|---|---|"]
    table += [summarize(name, result) for name, result in results.items()]
    (RESULTS / "latest.md").write_text(f"Run {stamp} on {meta['machine']}, scale {args.scale}\n\n"
                                       + "\n".join(table) + "\n")
    if latencies:
        plot = RESULTS / f"{stamp}-latency.png"
        plot_latencies(latencies, plot, f"Relay latency, event timestamp to receipt ({stamp})")
        shutil.copyfile(plot, RESULTS / "latest-latency.png")
        print(f"plot: {plot}")
    print("\n".join(table))


if __name__ == "__main__":
    asyncio.run(main())
