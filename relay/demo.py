"""``make run``'s demo: the relay, a verifying ``relay receiver``, and a stream of sample events.

Everything goes through the real paths: the API creates the account, callback (with the
ownership handshake, answered by the receiver) and subscription; events go through Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from relay.app import Relay
from relay.config import Settings
from relay.samples import sample_event

DEMO_MID = "514009876"
DEMO_TYPES = (
    "EmailSent", "EmailSent", "EmailSent", "EmailBounced", "SmsSent", "SmsDelivered",
    "SmsBounced", "EmailOpen",
)


async def run_demo(settings: Settings, demo_dir: Path, rate: float, receiver_port: int) -> None:
    demo_dir.mkdir(parents=True, exist_ok=True)
    for leftover in demo_dir.glob("relay.db*"):
        leftover.unlink()
    secret_file = demo_dir / "callback.secret"
    secret_file.unlink(missing_ok=True)
    settings = settings.replace(
        data_dir=str(demo_dir),
        store_url=f"sqlite:///{demo_dir / 'relay.db'}",
        admin_key=secrets.token_urlsafe(24),
        consumer_group="relay-demo",
        url_allowlist=(*settings.url_allowlist, "127.0.0.1"),
    )
    relay = Relay(settings)
    await relay.start()
    api = f"http://{settings.api_listen}"
    receiver: asyncio.subprocess.Process | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with aiohttp.ClientSession() as http:
            account = await _call(http, "POST", f"{api}/v1/accounts", settings.admin_key,
                                  {"name": "Demo Retail", "mid": DEMO_MID})
            key = account["apiKey"]
            receiver = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "relay.cli", "receiver", "--port", str(receiver_port),
                "--secret-file", str(secret_file), "--api", api, "--api-key", key,
            )
            await _wait_port("127.0.0.1", receiver_port)
            callback = await _call(http, "POST", f"{api}/v1/callbacks", key, {
                "name": "demo receiver", "url": f"http://127.0.0.1:{receiver_port}/hooks",
                "maxBatchSize": 10,
            })
            secret_file.write_text(callback["secret"])
            await _wait_verified(http, api, key, callback["id"])
            await _call(http, "POST", f"{api}/v1/subscriptions", key, {
                "name": "everything", "callbackId": callback["id"],
                "eventCategoryTypes": ["TransactionalSendEvents.*", "EngagementEvents.*"],
            })
            await relay.router.refresh()
            print(f"\nRelay is running the demo. Ctrl-C stops it and cleans up.\n"
                  f"  dashboard    {api}/ui  (log in with the account key)\n"
                  f"  account key  {key}   (RELAY_API_KEY for `relay callbacks list`, …)\n"
                  f"  admin key    {settings.admin_key}   (RELAY_ADMIN_KEY for `relay accounts …`)\n"
                  f"  API          {api}   (RELAY_API_URL; description at {api}/v1/openapi.yaml)\n"
                  f"  producing    {rate:g} sample events/s to {settings.topics[0]}; the receiver on port "
                  f"{receiver_port} prints each verified delivery\n",
                  flush=True)
            producer_task = asyncio.create_task(_produce(settings, rate, stop))
            await stop.wait()
            producer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer_task
    finally:
        print("\nstopping demo…", flush=True)
        await relay.stop()
        if receiver is not None and receiver.returncode is None:
            receiver.terminate()
            await receiver.wait()


async def _produce(settings: Settings, rate: float, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    rng = random.Random()
    try:
        while not stop.is_set():
            subscriber = f"sub-{rng.randrange(50):05d}"
            event = sample_event(rng.choice(DEMO_TYPES), DEMO_MID, rng, subscriber_key=subscriber)
            await producer.send_and_wait(settings.topics[0], orjson.dumps(event),
                                         key=subscriber.encode())
            await asyncio.sleep(1 / rate if rate > 0 else 0.5)
    finally:
        await producer.stop()


async def _call(http: aiohttp.ClientSession, method: str, url: str, key: str,
                body: dict[str, Any] | None = None) -> Any:
    async with http.request(method, url, json=body,
                            headers={"authorization": f"Bearer {key}"}) as response:
        data = await response.json()
        if response.status >= 400:
            raise RuntimeError(f"{method} {url} → {response.status}: {data}")
        return data


async def _wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _wait_verified(http: aiohttp.ClientSession, api: str, key: str, callback_id: str) -> None:
    for _ in range(100):
        callback = await _call(http, "GET", f"{api}/v1/callbacks/{callback_id}", key)
        if callback["verified"]:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the receiver did not confirm the ownership handshake within 10 s")
