"""Prometheus metrics, defined once. Label sets stay small: callback ids, never event ids.

Under ``relay serve --workers N`` every worker writes its metrics to Prometheus' multiprocess files
and the first worker's ``/metrics`` reads them all: counters and histograms add up, and each gauge
says how its workers' values combine (``multiprocess_mode``; ignored in a single process)."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase


class BatchHistogram(Histogram):
    """A histogram that takes a batch's observations at once: each delivered event is one
    observation of ``relay_end_to_end_seconds``, and ``observe`` per event (a lock turn for the sum
    and one for a bucket each) was ~3 % of the event loop's time in a batched drain."""

    def observe_many(self, amounts: Sequence[float]) -> None:
        """What ``observe`` of each amount gives, with one lock turn per bucket touched."""
        if len(amounts) <= 1:  # a single event's POST: the tally would cost more than it saves
            if amounts:
                self.observe(amounts[0])
            return
        self._raise_if_not_observable()
        self._sum.inc(sum(amounts))
        bounds = self._upper_bounds  # ascending, the last +Inf: the first bound >= amount takes it
        for index, count in Tally(bisect_left(bounds, amount) for amount in amounts).items():
            self._buckets[index].inc(count)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # With thousands of callbacks one series per callback is too many: ``metrics_per_callback``
    # off sums them under callback_id="all".
    per_callback: bool = True

    def callback(self, callback_id: str) -> str:
        """The callback_id label value for this callback."""
        return callback_id if self.per_callback else "all"

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once: ``labels()`` checks its values and takes a
        lock on every call (~0.9 µs), and each delivery asked for two. Children are never removed
        here, so a cached one stays the one exported."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def circuit_changed(self, callback_id: str, is_open: bool) -> None:
        if self.per_callback:
            self.circuit_open.labels(callback_id).set(1 if is_open else 0)
        elif is_open:
            self.circuit_open.labels("all").inc()
        else:
            self.circuit_open.labels("all").dec()

    def __post_init__(self) -> None:
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
        r = self.registry
        self.records_consumed = Counter("relay_records_consumed_total", "Kafka records read.", registry=r)
        self.records_quarantined = Counter(
            "relay_records_quarantined_total", "Records quarantined (bad input).", registry=r)
        self.events_unrouted = Counter(
            "relay_events_unknown_account_total", "Events whose mid matches no account.", registry=r)
        self.events_by_type = Counter(
            "relay_events_total", "Valid events by type.", ["event_type"], registry=r)
        self.jobs_created = Counter("relay_jobs_created_total", "Delivery jobs created.", registry=r)
        self.deliveries = Counter(
            "relay_deliveries_total", "Delivery attempts (POSTs) by outcome.",
            ["callback_id", "outcome"], registry=r)
        self.delivered_events = Counter(
            "relay_delivered_events_total", "Events delivered (2xx).", ["callback_id"], registry=r)
        self.dead_letters = Counter(
            "relay_dead_letters_total", "Jobs that became dead letters.", ["callback_id"], registry=r)
        self.end_to_end = BatchHistogram(
            "relay_end_to_end_seconds", "Event timestamp to 2xx from the receiver.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r)
        self.attempt_latency = Histogram(
            "relay_attempt_seconds", "Duration of one POST.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.circuit_open = Gauge(
            "relay_circuit_open", "1 while a callback's circuit is open (callback_id=\"all\": how many are open).",
            ["callback_id"], multiprocess_mode="livemax", registry=r)
        self.callbacks_disabled = Counter(
            "relay_callbacks_disabled_total", "Callbacks disabled by the relay.", registry=r)
        self.queue_depth = Gauge(
            "relay_lane_queue_depth", "Pending jobs held in memory per callback (more may wait in the store).",
            ["callback_id"], multiprocess_mode="livesum", registry=r)
        self.in_flight = Gauge(
            "relay_in_flight_requests", "POSTs in flight per callback.", ["callback_id"],
            multiprocess_mode="livesum", registry=r)
        self.concurrency_limit = Gauge(
            "relay_concurrency_limit", "POSTs a callback may have in flight now: adapts to its answers "
            "(callback_id=\"all\": the sum).", ["callback_id"], multiprocess_mode="livesum", registry=r)
        self.consumer_lag = Gauge(
            "relay_consumer_lag", "Records behind the partition's high watermark.",
            ["topic", "partition"], multiprocess_mode="livesum", registry=r)
        self.ingest_errors = Counter(
            "relay_ingest_errors_total",
            "Ingest failures by kind: store_unavailable (retried), store_rejected (batch split, "
            "records quarantined), broker (batch read again), unexpected.", ["kind"], registry=r)
        self.ingest_last_commit = Gauge(
            "relay_ingest_last_commit_timestamp_seconds", "When ingest last committed offsets (unix time).",
            multiprocess_mode="livemin", registry=r)
        self.ingest_stalled = Gauge(
            "relay_ingest_stalled", "1 while ingest has records to read but has not committed for "
            "ingest_stall_seconds.", multiprocess_mode="livemax", registry=r)
        self.quarantine_unpublished = Gauge(
            "relay_quarantine_unpublished",
            "Quarantine rows waiting to be published to the quarantine topic (counted up to 200).",
            multiprocess_mode="livemax", registry=r)
        self.dead_letters_stored = Gauge(
            "relay_dead_letters_stored", "Dead letters currently in the store.",
            multiprocess_mode="livemax", registry=r)
        self.throttled = Counter(
            "relay_throttled_seconds_total", "Time lanes held sends back for a callback's rate limit or a "
            "429's Retry-After (summed over lanes and instances).", ["callback_id"], registry=r)
        self.background_failures = Counter(
            "relay_background_failures_total",
            "Failures of supervised background work by routine (a periodic routine runs again "
            "after a backoff; a one-off task is reported).", ["routine"], registry=r)
        self.operations_run = Counter(
            "relay_operations_total", "Durable operations finished, by kind and final state.",
            ["kind", "state"], registry=r)


METRICS = Metrics()
