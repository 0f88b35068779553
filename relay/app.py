"""Builds the relay from its settings, runs it, and shuts it down in the right order.

Start order follows the data flow backwards (store, routing, delivery, API, then ingest), so
nothing is consumed before there is somewhere to put it; stop order is the reverse.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Callable
from pathlib import Path

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
from relay.delivery.endpoint import EndpointSender
from relay.delivery.http import DeliveryClient, UrlPolicy
from relay.delivery.lane import LaneConfig
from relay.delivery.outcomes import Outcomes, OutcomeTopics
from relay.delivery.retry import RetryPolicy
from relay.ingest import Ingest
from relay.metrics import METRICS
from relay.operations import Handshake, OperationRunner, Recover, Redrive, ReleaseHeld
from relay.publisher import Publisher
from relay.routing import Router
from relay.store import open_store
from relay.supervisor import Supervisor
from relay.telemetry import Telemetry
from relay.topics import ensure_topics

log = structlog.get_logger("relay.app")

INPUT_TOPIC_PARTITIONS = 6


# Net new container objects between two young collections (CPython's default is 700).
_GC_YOUNG_THRESHOLD = 50_000


def _tune_collector() -> None:
    """Take what imports and start-up built out of the collector's view, and collect less often.

    Every full collection walks all tracked objects, and with the ~70,000 of start-up it paused
    the event loop for 40-50 ms: the largest term of the live p99. While running, jobs and events
    live for a batch or a window, long enough to be scanned by one or two generations at the
    default threshold and rarely long enough to matter: in a batched drain of 150,000 events the
    collector ran 2,700 times for 1.0 s (a tenth of the run); at 50,000 it ran 4 times for 0.06 s,
    at the same peak RSS. Cyclic garbage waits longer, bounded by the threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, 10, 10)


class Relay:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time,
                 resolver: AbstractResolver | None = None, telemetry: Telemetry | None = None,
                 serve_api: bool = True) -> None:
        self.settings = settings
        self._serve_api = serve_api  # false in the second and later of `relay serve --workers N`
        self._clock = clock
        self._resolver = resolver  # DNS for callback URLs (registration and connect); tests inject one
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self.supervisor = Supervisor()
        self.telemetry = telemetry or Telemetry.from_environment()  # off unless OTEL_* ask for export

    async def start(self) -> None:
        s = self.settings
        METRICS.per_callback = s.metrics_per_callback
        if self._serve_api:
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
        self.router = Router(self.store, self.supervisor)
        await self.router.start()
        self.client = DeliveryClient(UrlPolicy(s.url_allowlist), s.global_max_in_flight, resolver=self._resolver)
        await self.client.start()
        self.sender = EndpointSender(self.client, self._clock)
        self.publisher = Publisher(s.kafka_bootstrap)
        await self.publisher.start()

        self.dispatcher = Dispatcher(
            self.store, self.sender, self.router.callback,
            RetryPolicy(s.retry_schedule, s.retry_max_age, s.retry_after_max),
            LaneConfig(
                s.lane_max_in_flight, s.lane_window, s.batch_linger, s.delivery_timeout,
                CircuitConfig(s.circuit_failure_threshold, s.circuit_cooldown,
                              s.circuit_cooldown_max, s.disable_after),
            ),
            self.supervisor, self.telemetry, global_max_in_flight=s.global_max_in_flight, clock=self._clock,
        )
        self.outcomes = Outcomes(
            self.store, self.publisher,
            OutcomeTopics(s.deadletter_topic, s.ops_topic, s.deadletter_alert_threshold),
            refresh_routing=self.router.refresh, clock=self._clock, supervisor=self.supervisor,
            dead_letters=await self.store.count_deadletters(),
        )
        self.dispatcher.add_listener(self.outcomes.on_result)
        self.dispatcher.add_lane_listener(self.outcomes.on_lane_event)
        await self.dispatcher.start()

        self.operations = OperationRunner(
            self.store,
            [Redrive(self.store, self.dispatcher.requeue, self._clock),
             Recover(self.store, self.sender, self._clock),
             Handshake(self.store, self.sender, self._clock, s.webhook_origin),
             ReleaseHeld(self.store, self.dispatcher.requeue)],
            self.supervisor, clock=self._clock, lease=s.operation_lease,
        )
        self.operations.start()

        ctx = ApiContext(s, self.store, self.client, self.router,
                         readiness={"kafka": self._kafka_ready, "ingest": self._ingest_ready}, clock=self._clock,
                         requeue=self.dispatcher.requeue, circuit_state=self._circuit_state,
                         in_flight=self._in_flight,
                         operations=self.operations, sender=self.sender)
        # Long-lived streams (the activity stream) must not hold a shutdown for long.
        if self._serve_api:
            self._runner = await serve_app(build_api(ctx), s.api_host_port, "RELAY_API_LISTEN")
            if s.metrics_host_port is not None:
                self._metrics_runner = await serve_app(build_metrics_app(), s.metrics_host_port,
                                                       "RELAY_METRICS_LISTEN")

        self._retention = self.supervisor.every("retention", s.retention_interval, self._purge)
        self._gauges = self.supervisor.every("gauges", 2.0, self._refresh_gauges)

        self.ingest = Ingest(s, self.store, self.router, self.dispatcher, self.publisher, self.supervisor,
                             clock=self._clock, telemetry=self.telemetry)
        await self.ingest.start()
        log.info("relay_started", api=s.api_listen, topics=list(s.topics),
                 store=s.resolved_store_url.split("?")[0], kafka=s.kafka_bootstrap)

    async def stop(self) -> None:
        """Stop consuming, let in-flight POSTs finish (bounded), persist results, close."""
        log.info("relay_stopping")
        await self.ingest.stop()
        await self.operations.stop()
        await self._retention.stop()
        await self._gauges.stop()
        await self.dispatcher.stop(grace=5.0)
        await self.outcomes.close(timeout=5.0)
        await self.publisher.stop()
        await self.client.close()
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        await self.router.stop()
        await self.supervisor.stop(grace=5.0)
        await self.store.close()
        self.telemetry.close()
        log.info("relay_stopped")
        self._stopped.set()

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # before start: a signal while starting stops cleanly
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        _tune_collector()
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

    def _in_flight(self, callback_id: str) -> int:
        lane = self.dispatcher.lanes.get(callback_id)
        return 0 if lane is None else lane.in_flight

    def _circuit_state(self, callback_id: str) -> str | None:
        lane = self.dispatcher.lanes.get(callback_id)
        return None if lane is None else lane.circuit.state

    async def _refresh_gauges(self) -> None:
        """Gauges that describe state rather than count events: refreshed on a timer."""
        lanes = self.dispatcher.lanes
        if METRICS.per_callback:
            for callback_id, lane in lanes.items():
                METRICS.queue_depth.labels(callback_id).set(lane.depth)
                METRICS.in_flight.labels(callback_id).set(lane.in_flight)
                METRICS.concurrency_limit.labels(callback_id).set(lane.concurrency.limit)
        else:
            METRICS.queue_depth.labels("all").set(sum(lane.depth for lane in lanes.values()))
            METRICS.in_flight.labels("all").set(sum(lane.in_flight for lane in lanes.values()))
            METRICS.concurrency_limit.labels("all").set(sum(lane.concurrency.limit for lane in lanes.values()))
        for tp, lag in (await self.ingest.lag()).items():
            METRICS.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        METRICS.dead_letters_stored.set(self.outcomes.dead_letters)

    async def _purge(self) -> None:
        """Purge old rows in small transactions, pausing between them, so delivery never waits."""
        s = self.settings
        now = self._clock()
        while True:
            purged = await self.store.purge_older_than(
                now - s.retention_events, now - s.retention_attempts, now - s.retention_deadletters)
            purged["operations"] = await self.store.purge_finished_operations(now - s.retention_attempts)
            if purged["deadletters"]:
                self.outcomes.dead_letters = await self.store.count_deadletters()
            if not any(purged.values()):
                return
            log.info("retention_purged", **purged)
            await asyncio.sleep(0.05)
