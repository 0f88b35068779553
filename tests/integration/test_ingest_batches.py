"""How many records ingest takes per batch (one store transaction): ``fetch_max_records`` while it
keeps up, the larger ``backlog_fetch_max_records`` while a backlog of more than ten such batches
waits, and never more."""

from __future__ import annotations

from pathlib import Path

import orjson

from relay.config import load_settings
from relay.ingest import fetch_size
from relay.metrics import METRICS
from relay.samples import sample_event
from tests.helpers.harness import UNROUTED_MID, RelayHarness, settings_for
from tests.helpers.kafka import KafkaBroker, produce
from tests.helpers.polling import eventually


def test_the_batch_size_follows_how_far_behind_ingest_is() -> None:
    settings = load_settings(env={}, overrides={"fetch_max_records": 20, "backlog_fetch_max_records": 200})
    assert fetch_size(settings, behind=0) == 20
    assert fetch_size(settings, behind=200) == 20
    assert fetch_size(settings, behind=201) == 200
    smaller = load_settings(env={}, overrides={"fetch_max_records": 20, "backlog_fetch_max_records": 5})
    assert fetch_size(smaller, behind=10_000) == 20, "a backlog never makes batches smaller"


def _batches(le: str) -> float:
    """Batches observed so far with at most ``le`` records (the process-wide histogram)."""
    return METRICS.registry.get_sample_value("relay_ingest_batch_records_bucket", {"le": le}) or 0.0


async def test_a_backlog_is_taken_in_larger_batches_and_never_beyond_their_limit(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    harness = RelayHarness(settings_for(kafka.bootstrap, tmp_path, fetch_max_records=20,
                                        backlog_fetch_max_records=200))
    await harness.start()  # creates the topics
    await harness.stop()
    records = [orjson.dumps(sample_event("EmailSent", mid=UNROUTED_MID, subscriber_key=f"s{n}"))
               for n in range(1500)]
    await produce(kafka.bootstrap, harness.topic, records, [f"s{n}".encode() for n in range(1500)])
    before = {le: _batches(le) for le in ("10.0", "100.0", "500.0", "+Inf")}
    consumed = METRICS.registry.get_sample_value("relay_records_consumed_total") or 0.0

    async def all_consumed() -> bool:
        return (METRICS.registry.get_sample_value("relay_records_consumed_total") or 0.0) >= consumed + len(records)

    await harness.start()
    try:
        await eventually(all_consumed, timeout=60, what="the backlog consumed")
    finally:
        await harness.close()
    grew = {le: _batches(le) - before[le] for le in before}
    assert grew["500.0"] - grew["100.0"] > 0, f"no batch of 101-200 records while 1,500 waited: {grew}"
    assert grew["+Inf"] == grew["500.0"], f"a batch went past backlog_fetch_max_records: {grew}"

