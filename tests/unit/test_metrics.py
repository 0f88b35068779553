"""``BatchHistogram.observe_many`` must export exactly what one ``observe`` per amount does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from relay.metrics import BatchHistogram, Metrics

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Bounds themselves and their neighbours: a bound belongs to its own bucket (le, less or equal).
_AMOUNTS = st.one_of(st.sampled_from([0.0, *_BUCKETS, 1e6]), st.floats(min_value=0, max_value=1e4),
                     st.sampled_from(_BUCKETS).map(lambda b: b + 1e-12))


@given(st.lists(_AMOUNTS, max_size=60))
def test_observing_a_batch_exports_what_observing_each_does(amounts: list[float]) -> None:
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    each = BatchHistogram("h_seconds", "h", buckets=_BUCKETS, registry=one_by_one)
    many = BatchHistogram("h_seconds", "h", buckets=_BUCKETS, registry=batched)
    for amount in amounts:
        each.observe(amount)
    many.observe_many(amounts)
    assert samples(batched) == samples(one_by_one)


def samples(registry: CollectorRegistry) -> list[str]:
    """The exposition's lines but the creation time (which differs between two histograms)."""
    return [line for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("h_seconds_created")]


def test_a_cached_child_is_the_one_labels_gives_and_exports() -> None:
    metrics = Metrics()
    metrics.child(metrics.deliveries, "cb_1", "delivered").inc()
    metrics.child(metrics.deliveries, "cb_1", "delivered").inc(2)
    metrics.child(metrics.deliveries, "cb_1", "retry").inc()
    assert metrics.child(metrics.deliveries, "cb_1", "delivered") is metrics.deliveries.labels("cb_1", "delivered")
    exported = generate_latest(metrics.registry).decode()
    assert 'relay_deliveries_total{callback_id="cb_1",outcome="delivered"} 3.0' in exported
    assert 'relay_deliveries_total{callback_id="cb_1",outcome="retry"} 1.0' in exported
    assert 'outcome="dead"' not in exported  # a child exists only once something counted it
