"""Builds the relay from its settings, runs it, and shuts it down in the right order.

Start order follows the data flow backwards (store, routing, delivery, API, then ingest), so
nothing is consumed before there is somewhere to put it; stop order is the reverse.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.abc import AbstractResolver
from aiokafka.admin import AIOKafkaAdminClient

from relay.api import ApiContext, build_api, build_metrics_app
from relay.api.server import check_free, serve_app
from relay.config import Settings
from relay.crypto import SecretBox, load_master_key
from relay.delivery.circuit import CircuitConfig
from relay.delivery.dispatcher import Dispatcher
from relay.delivery.http import DeliveryClient, UrlPolicy
from relay.delivery.lane import LaneConfig
from relay.delivery.retry import RetryPolicy
from relay.ingest import Ingest
from relay.metrics import METRICS
from relay.publisher import Publisher
from relay.routing import Router
from relay.store import open_store
from relay.store.models import Callback, DeliveryResult
from relay.topics import ensure_topics

log = structlog.get_logger("relay.app")

INPUT_TOPIC_PARTITIONS = 6


class Relay:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time,
                 resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self._clock = clock
        self._resolver = resolver  # DNS for callback URLs (registration and connect); tests inject one
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self._disabling: set[str] = set()

    async def start(self) -> None:
        s = self.settings
        METRICS.per_callback = s.metrics_per_callback
        check_free(s.api_host_port, "RELAY_API_LISTEN")
        if s.metrics_host_port is not None:
            check_free(s.metrics_host_port, "RELAY_METRICS_LISTEN")
        Path(s.data_dir).mkdir(parents=True, exist_ok=True)
        box = SecretBox(load_master_key(s.master_key, s.data_dir))
        self.store = open_store(s.resolved_store_url, box)
        await self.store.start()

        await ensure_topics(s.kafka_bootstrap, {
            **{topic: INPUT_TOPIC_PARTITIONS for topic in s.topics},
            s.quarantine_topic: 1, s.deadletter_topic: 1, s.ops_topic: 1,
        })
        self.router = Router(self.store)
        await self.router.start()
        self.client = DeliveryClient(UrlPolicy(s.url_allowlist), s.global_max_in_flight, resolver=self._resolver)
        await self.client.start()
        self.publisher = Publisher(s.kafka_bootstrap)
        await self.publisher.start()

        self.dispatcher = Dispatcher(
            self.store, self.client, self.router.callback,
            RetryPolicy(s.retry_schedule, s.retry_max_age, s.retry_after_max),
            LaneConfig(
                s.lane_max_in_flight, s.lane_window, s.batch_linger, s.delivery_timeout,
                CircuitConfig(s.circuit_failure_threshold, s.circuit_cooldown,
                              s.circuit_cooldown_max, s.disable_after),
            ),
            global_max_in_flight=s.global_max_in_flight, clock=self._clock,
        )
        self.dispatcher.add_listener(self._on_result)
        self.dispatcher.add_lane_listener(self._on_lane_event)
        await self.dispatcher.start()

        ctx = ApiContext(s, self.store, self.client, self.router,
                         readiness={"kafka": self._kafka_ready, "ingest": self._ingest_ready}, clock=self._clock,
                         requeue=self.dispatcher.requeue, circuit_state=self._circuit_state)
        # Long-lived streams (the activity stream) must not hold a shutdown for long.
        self._runner = await serve_app(build_api(ctx), s.api_host_port, "RELAY_API_LISTEN")
        if s.metrics_host_port is not None:
            self._metrics_runner = await serve_app(build_metrics_app(), s.metrics_host_port, "RELAY_METRICS_LISTEN")

        self._deadletters = await self.store.count_deadletters()
        self._retention = asyncio.create_task(self._retention_loop(), name="retention")
        self._gauges = asyncio.create_task(self._gauge_loop(), name="gauges")

        self.ingest = Ingest(s, self.store, self.router, self.dispatcher, self.publisher,
                             clock=self._clock)
        await self.ingest.start()
        log.info("relay_started", api=s.api_listen, topics=list(s.topics),
                 store=s.resolved_store_url.split("?")[0], kafka=s.kafka_bootstrap)

    async def stop(self) -> None:
        """Stop consuming, let in-flight POSTs finish (bounded), persist results, close."""
        log.info("relay_stopping")
        await self.ingest.stop()
        self._retention.cancel()
        self._gauges.cancel()
        await self.dispatcher.stop(grace=5.0)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        await self.publisher.stop()
        await self.client.close()
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        await self.router.stop()
        await self.store.close()
        log.info("relay_stopped")
        self._stopped.set()

    async def run_until_signalled(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.stop()

    async def _kafka_ready(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap,
                                    request_timeout_ms=2000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    async def _ingest_ready(self) -> None:
        ingest = getattr(self, "ingest", None)
        if ingest is not None:
            await ingest.check_ready()

    # -- reactions to delivery results ----------------------------------------------------
    def _on_result(self, result: DeliveryResult, callback: Callback) -> None:
        attempt = result.attempt
        METRICS.deliveries.labels(METRICS.callback(callback.id), result.outcome).inc()
        METRICS.attempt_latency.observe(attempt.latency_ms / 1000)
        if result.outcome == "delivered":
            METRICS.delivered_events.labels(METRICS.callback(callback.id)).inc(len(result.jobs))
            now = self._clock()
            for job in result.jobs:
                if job.event_timestamp_ms:
                    METRICS.end_to_end.observe(max(0.0, now - job.event_timestamp_ms / 1000))
        elif result.outcome == "dead":
            METRICS.dead_letters.labels(METRICS.callback(callback.id)).inc(len(result.jobs))
            self._spawn(self._publish_dead_letters(result))
            before, self._deadletters = self._deadletters, self._deadletters + len(result.jobs)
            threshold = self.settings.deadletter_alert_threshold
            if before < threshold <= self._deadletters:
                log.warning("deadletter_threshold_crossed", deadletters=self._deadletters)
                self._spawn(self._ops_event("deadletters.threshold_crossed", callback,
                                            {"deadLetters": self._deadletters, "threshold": threshold}))

    def _on_lane_event(self, kind: str, callback: Callback, data: dict[str, Any]) -> None:
        if kind == "failing_since":
            self._spawn(self.store.set_failing_since(callback.id, data["since"]))
        elif kind == "circuit_opened":
            METRICS.circuit_changed(callback.id, is_open=True)
            log.warning("circuit_opened", callback_id=callback.id, **data)
            self._spawn(self._ops_event("callback.circuit_opened", callback, data))
        elif kind == "circuit_closed":
            METRICS.circuit_changed(callback.id, is_open=False)
            log.info("circuit_closed", callback_id=callback.id)
            self._spawn(self._ops_event("callback.circuit_closed", callback, data))
        elif kind == "disable" and callback.id not in self._disabling:
            self._disabling.add(callback.id)
            self._spawn(self._disable(callback, data["reason"]))

    def _circuit_state(self, callback_id: str) -> str | None:
        lane = self.dispatcher.lanes.get(callback_id)
        return None if lane is None else lane.circuit.state

    async def _gauge_loop(self, interval: float = 2.0) -> None:
        """Gauges that describe state rather than count events: refreshed on a timer."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self._refresh_gauges()
            except Exception:
                log.exception("gauge_refresh_failed")

    async def _refresh_gauges(self) -> None:
        lanes = self.dispatcher.lanes
        if METRICS.per_callback:
            for callback_id, lane in lanes.items():
                METRICS.queue_depth.labels(callback_id).set(lane.depth)
                METRICS.in_flight.labels(callback_id).set(lane.in_flight)
        else:
            METRICS.queue_depth.labels("all").set(sum(lane.depth for lane in lanes.values()))
            METRICS.in_flight.labels("all").set(sum(lane.in_flight for lane in lanes.values()))
        for tp, lag in (await self.ingest.lag()).items():
            METRICS.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        METRICS.dead_letters_stored.set(self._deadletters)

    async def _retention_loop(self) -> None:
        """Purge old rows in small transactions, pausing between them, so delivery never waits."""
        s = self.settings
        while True:
            await asyncio.sleep(s.retention_interval)
            now = self._clock()
            try:
                while True:
                    purged = await self.store.purge_older_than(
                        now - s.retention_events, now - s.retention_attempts, now - s.retention_deadletters)
                    if purged["deadletters"]:
                        self._deadletters = await self.store.count_deadletters()
                    if not any(purged.values()):
                        break
                    log.info("retention_purged", **purged)
                    await asyncio.sleep(0.05)
            except Exception:
                log.exception("retention_failed")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_dead_letters(self, result: DeliveryResult) -> None:
        records = [
            ({
                "eventId": job.event_id,
                "callbackId": result.attempt.callback_id,
                "webhookId": result.attempt.batch_id,
                "reason": result.reason,
                "attempts": job.attempts,
                "lastStatus": result.attempt.status,
                "lastError": result.attempt.error,
                "event": orjson.Fragment(job.body),
            }, job.event_id.encode())
            for job in result.jobs
        ]
        try:
            await self.publisher.publish_many(self.settings.deadletter_topic, records)
        except Exception:
            log.exception("deadletter_publish_failed", callback_id=result.attempt.callback_id)

    async def _disable(self, callback: Callback, reason: str) -> None:
        try:
            await self.store.set_callback_enabled(callback.id, False, reason)
            await self.router.refresh()
        finally:
            self._disabling.discard(callback.id)
        METRICS.callbacks_disabled.inc()
        log.warning("callback_disabled", callback_id=callback.id, reason=reason)
        await self._ops_event("callback.disabled", callback, {"reason": reason})

    async def _ops_event(self, kind: str, callback: Callback, data: dict[str, Any]) -> None:
        """Operational events on relay.ops, keyed by callback id; a broker outage only logs."""
        try:
            await self.publisher.publish(self.settings.ops_topic, {
                "type": kind, "callbackId": callback.id, "accountId": callback.account_id,
                "at": self._clock(), **data,
            }, key=callback.id.encode())
        except Exception:
            log.exception("ops_event_failed", kind=kind, callback_id=callback.id)
