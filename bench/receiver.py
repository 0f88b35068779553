"""A fast benchmark receiver, run in its own process: counts events, measures latency.

    python -m bench.receiver --port 9100 [--hang]

GET /stats returns {"requests", "events", "first", "last", "latencies_ms": [...]} where a latency
is receipt time minus the event's timestampUTC. Signatures are not verified here (the test
suite does that); the receiver must not be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiohttp import web


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.events = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] = []


def build(hang: bool, status: int) -> web.Application:
    stats = Stats()
    handshakes: list[dict[str, str]] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        events = orjson.loads(body)
        if isinstance(events, dict):
            handshakes.append(events)
            return web.Response(status=200)
        if hang:
            await asyncio.sleep(3600)
        if status != 200:
            return web.Response(status=status)
        stats.requests += 1
        stats.events += len(events)
        if not stats.first:
            stats.first = now
        stats.last = now
        now_ms = now * 1000
        stats.latencies.extend(now_ms - e["timestampUTC"] for e in events)
        return web.Response(status=status)

    async def get_stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({
            "requests": stats.requests, "events": stats.events, "first": stats.first,
            "last": stats.last, "latencies_ms": stats.latencies,
        }), content_type="application/json")

    async def get_handshakes(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(handshakes), content_type="application/json")

    async def reset(request: web.Request) -> web.Response:
        stats.reset()
        return web.Response(text="ok")

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    app.router.add_get("/handshakes", get_handshakes)
    app.router.add_post("/{tail:.*}", receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--status", type=int, default=200)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(build(args.hang, args.status), host="127.0.0.1", port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
