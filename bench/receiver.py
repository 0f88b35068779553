"""A fast benchmark receiver, run in its own process: counts events, measures latency, checks order.

    python -m bench.receiver --port 9100 [--hang] [--status 503] [--fail-rate 0.3]

GET /stats returns {"requests", "events", "attempts", "first", "last", "duplicates",
"order_violations", "latencies_ms": [...], "arrivals": [...]} (arrivals: receipt time of each
successful POST); ``?latencies=0`` leaves the lists out (for polling).
A latency is receipt time minus the event's timestampUTC. An event's messageKey is ``m<n>`` with n
rising per subscriberKey in produce order, so a lower n after a higher one for the same key is an
order violation, and a second success for the same n on the same path is a duplicate. POST /control
{"status": 200} changes the answer at runtime (an endpoint recovering). Signatures are not
verified here (the test suite does that); the receiver must not be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import orjson
from aiohttp import web


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.attempts = 0
        self.events = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] = []
        self.arrivals: list[float] = []
        self.duplicates = 0
        self.order_violations = 0
        self._last_seq: dict[tuple[str, str], int] = {}
        self._seen: dict[str, bytearray] = {}

    def record(self, path: str, events: list[dict], now: float) -> None:
        self.requests += 1
        self.events += len(events)
        if not self.first:
            self.first = now
        self.last = now
        self.arrivals.append(now)
        now_ms = now * 1000
        for event in events:
            self.latencies.append(now_ms - event["timestampUTC"])
            info = event["info"]
            message_key = info["messageKey"]
            if not message_key[1:].isdigit():  # not from bench.harness.produce (the ceiling's body)
                continue
            seq = int(message_key[1:])
            self._mark_seen(path, seq)
            key = (path, info["subscriberKey"])
            if self._last_seq.get(key, -1) > seq:
                self.order_violations += 1
            self._last_seq[key] = seq

    def _mark_seen(self, path: str, seq: int) -> None:
        seen = self._seen.setdefault(path, bytearray())
        byte, bit = divmod(seq, 8)
        if byte >= len(seen):
            seen.extend(bytes(max(byte + 1 - len(seen), 1 << 16)))
        if seen[byte] >> bit & 1:
            self.duplicates += 1
        seen[byte] |= 1 << bit


def build(hang: bool, status: int, fail_rate: float) -> web.Application:
    stats = Stats()
    handshakes: list[dict[str, str]] = []
    mode = {"status": status}
    rng = random.Random(7)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        events = orjson.loads(body)
        if isinstance(events, dict):
            handshakes.append(events)
            return web.Response(status=200)
        if hang:
            await asyncio.sleep(3600)
        stats.attempts += 1
        if mode["status"] != 200:
            return web.Response(status=mode["status"])
        if fail_rate and rng.random() < fail_rate:
            return web.Response(status=500)
        stats.record(request.path, events, now)
        return web.Response(status=200)

    async def get_stats(request: web.Request) -> web.Response:
        body: dict[str, Any] = {
            "requests": stats.requests, "events": stats.events, "attempts": stats.attempts,
            "first": stats.first, "last": stats.last, "duplicates": stats.duplicates,
            "order_violations": stats.order_violations,
        }
        if request.query.get("latencies") != "0":
            body["latencies_ms"] = stats.latencies
            body["arrivals"] = stats.arrivals
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def get_handshakes(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(handshakes), content_type="application/json")

    async def reset(request: web.Request) -> web.Response:
        stats.reset()
        return web.Response(text="ok")

    async def control(request: web.Request) -> web.Response:
        mode.update(orjson.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/control", control)
    app.router.add_get("/handshakes", get_handshakes)
    app.router.add_post("/{tail:.*}", receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--fail-rate", type=float, default=0.0, help="Answer 500 to this share of attempts.")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(build(args.hang, args.status, args.fail_rate), host="127.0.0.1", port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
