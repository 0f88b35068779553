"""Running a real relay inside a test, and driving it through its real API."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from relay.app import Relay
from relay.config import Settings, load_settings
from relay.samples import sample_event
from relay.telemetry import Telemetry
from tests.helpers.kafka import free_port
from tests.helpers.polling import eventually
from tests.helpers.postgres import URL_VARIABLE, fresh_store_url, testing_postgres
from tests.helpers.receiver import RecordingReceiver

ADMIN_KEY = "test-admin-key"


def settings_for(bootstrap: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for one test: its own topics and group, fast retries, loopback allowed."""
    return load_settings(env={}, overrides=settings_values(bootstrap, data_dir, **overrides))


def settings_values(bootstrap: str, data_dir: Path, **overrides: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topics": [f"events-{tag}"],
        "consumer_group": f"relay-{tag}",
        "quarantine_topic": f"quarantine-{tag}",
        "deadletter_topic": f"deadletter-{tag}",
        "ops_topic": f"ops-{tag}",
        "data_dir": str(data_dir),
        "api_listen": f"127.0.0.1:{free_port()}",
        "admin_key": ADMIN_KEY,
        "url_allowlist": ["127.0.0.1"],
        "retry_schedule": "0,100ms,200ms",
        "retry_max_age": "30s",
        "delivery_timeout": "2s",
        "log_level": "warning",
    }
    if testing_postgres():
        values["store_url"] = fresh_store_url(os.environ[URL_VARIABLE])
    values.update(overrides)
    return values


@dataclass
class ApiClient:
    base: str
    key: str
    session: aiohttp.ClientSession = field(default_factory=aiohttp.ClientSession)

    async def call(self, method: str, path: str, body: Any = None, key: str | None = None,
                   expect: int | None = None) -> tuple[int, Any]:
        async with self.session.request(
            method, self.base + path, json=body,
            headers={"authorization": f"Bearer {key or self.key}"},
        ) as response:
            data = await response.json(content_type=None)
            if expect is not None:
                assert response.status == expect, (response.status, data)
            return response.status, data

    async def close(self) -> None:
        await self.session.close()


@dataclass
class Tenant:
    """An account with its API client."""

    account: dict[str, Any]
    api: ApiClient

    @property
    def mid(self) -> str:
        return self.account["mid"]

    async def add_callback(self, receiver: RecordingReceiver, **fields: Any) -> dict[str, Any]:
        """Create a callback and complete the ownership handshake the way an owner would."""
        _, callback = await self.api.call(
            "POST", "/v1/callbacks",
            {"name": fields.pop("name", "hook"), "url": receiver.url, **fields}, expect=201,
        )
        receiver.secrets.append(callback["secret"])
        await receiver.wait_for(
            lambda: any(h["callbackId"] == callback["id"] for h in receiver.handshakes), 10
        )
        key = next(h["verificationKey"] for h in receiver.handshakes
                   if h["callbackId"] == callback["id"])
        await self.api.call("POST", f"/v1/callbacks/{callback['id']}/verify",
                            {"verificationKey": key}, expect=200)
        return callback

    async def timeline(self, subscriber_key: str) -> list[dict[str, Any]]:
        """The subscriber's events and, per event, its delivery jobs by callback (the message-status API)."""
        _, body = await self.api.call("GET", f"/v1/messages?subscriberKey={subscriber_key}", expect=200)
        return list(body["events"])

    async def subscribe(self, callback_id: str, types: list[str], **fields: Any) -> dict[str, Any]:
        _, sub = await self.api.call("POST", "/v1/subscriptions", {
            "name": fields.pop("name", f"sub-{uuid.uuid4().hex[:8]}"),
            "callbackId": callback_id, "eventCategoryTypes": types, **fields,
        }, expect=201)
        return sub


async def create_tenant(admin: ApiClient, mid: str | None = None, name: str = "Acme") -> Tenant:
    mid = mid or str(uuid.uuid4().int % 10**9)
    _, account = await admin.call("POST", "/v1/accounts", {"name": name, "mid": mid}, expect=201)
    return Tenant(account, ApiClient(admin.base, account["apiKey"]))


UNROUTED_MID = "999999999999"  # no test account has it: markers with it are routed nowhere


class RelayHarness:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time,
                 resolver: AbstractResolver | None = None, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.resolver = resolver
        self.telemetry = telemetry
        self.relay: Relay | None = None
        self.base = f"http://{settings.api_listen}"
        self.admin = ApiClient(self.base, ADMIN_KEY)
        self._clients: list[ApiClient] = [self.admin]

    async def start(self) -> RelayHarness:
        self.relay = Relay(self.settings, clock=self.clock, resolver=self.resolver, telemetry=self.telemetry)
        await self.relay.start()
        return self

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
            self.relay = None

    async def close(self) -> None:
        await self.stop()
        for client in self._clients:
            await client.close()

    async def tenant(self, mid: str | None = None, name: str = "Acme") -> Tenant:
        tenant = await create_tenant(self.admin, mid, name)
        self._clients.append(tenant.api)
        return tenant

    async def subscribed_tenant(self, receiver: RecordingReceiver, types: list[str],
                                **callback_fields: Any) -> tuple[Tenant, dict[str, Any]]:
        """A new account with a verified callback subscribed to ``types``, routed at once."""
        tenant = await self.tenant()
        callback = await tenant.add_callback(receiver, **callback_fields)
        await tenant.subscribe(callback["id"], types)
        await self.refresh_routing()
        return tenant, callback

    async def refresh_routing(self) -> None:
        assert self.relay is not None
        await self.relay.router.refresh()

    async def routing_caught_up(self, timeout: float = 15.0) -> None:
        """Wait, without forcing it, until routing has reloaded the registry as it is now."""
        relay = self.relay
        assert relay is not None
        target = await relay.store.registry_version()

        async def current() -> bool:
            return relay.router.version >= target

        await eventually(current, timeout, what=f"routing reloaded to registry version {target}")

    async def caught_up(self, timeout: float = 30.0) -> None:
        """Wait until ingest has committed every partition of the topic up to its end as of now:
        every record produced so far is persisted, on whatever partition it landed."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                    group_id=self.settings.consumer_group, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(self.topic, p) for p in consumer.partitions_for_topic(self.topic) or ()]
            ends = await consumer.end_offsets(partitions)

            async def committed_to_end() -> bool:
                for tp, end in ends.items():
                    committed = await consumer.committed(tp)
                    if end and (committed is None or committed < end):
                        return False
                return True

            await eventually(committed_to_end, timeout, what=f"ingest committed {self.topic} up to {ends}")
        finally:
            await consumer.stop()

    async def settled(self, key: bytes, timeout: float = 30.0) -> None:
        """Wait until ingest has committed past a marker produced now with ``key``: every record
        produced earlier with that key (same partition) is persisted by then — routed or not — so a
        "nothing for this callback" check after it cannot pass merely because ingest was slow."""
        marker = orjson.dumps(sample_event("EmailSent", mid=UNROUTED_MID, subscriber_key="settle-marker"))
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            sent = await producer.send_and_wait(self.topic, marker, key=key)
        finally:
            await producer.stop()
        partition = TopicPartition(self.topic, sent.partition)

        async def committed_past() -> bool:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                        group_id=self.settings.consumer_group, enable_auto_commit=False)
            await consumer.start()
            try:
                committed = await consumer.committed(partition)
            finally:
                await consumer.stop()
            return committed is not None and committed > sent.offset

        await eventually(committed_past, timeout, what=f"ingest committed past offset {sent.offset} of {partition}")

    @property
    def topic(self) -> str:
        return self.settings.topics[0]
