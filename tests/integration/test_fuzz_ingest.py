"""No record can stall Relay: hypothesis produces hostile records to a real broker, beside valid
marker events on every partition, and the real pipeline (either store) must keep flowing.

After each example: every marker is delivered; every record is either delivered (matched by its
``fuzzId``) or in quarantine exactly once with a reason — never both, never neither; records we
know to be good are delivered and records we know to be bad are quarantined with the expected
reason; offsets are committed past the markers. After all examples, with the relay idle, a last
round of markers adds no quarantine row, and the quarantine topic holds each row exactly once.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from relay.app import INPUT_TOPIC_PARTITIONS
from relay.events import KNOWN_EVENT_TYPES
from relay.samples import sample_event
from tests.helpers.harness import RelayHarness, Tenant, settings_for
from tests.helpers.kafka import KafkaBroker, read_topic
from tests.helpers.polling import eventually
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka

MAX_RECORD_BYTES = 512 * 1024
OPTIONAL_TOP = ("compositeId", "composite", "definitionKey", "definitionId", "eid", "info")
OPTIONAL_INFO = ("to", "subscriberKey", "messageKey", "status", "reason", "statusCode", "bounceCode",
                 "bounceMessage", "smtpReason")


@dataclass
class Fuzzed:
    """One generated record and what must become of it: ``deliver``, ``quarantine`` (with
    ``reason`` when only one thing is wrong with it), or ``either`` when the test cannot know."""

    value: bytes | None
    fate: str
    reason: str | None = None
    fuzz_id: str | None = None
    partition: int = 0


# -- strategies ---------------------------------------------------------------------------------
safe_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | safe_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(safe_text, inner, max_size=4),
    max_leaves=12,
)
unknown_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=12).map(lambda s: "x_" + s)
huge_ints = st.integers(2**63, 2**80) | st.integers(-(2**80), -(2**63) - 1)


@st.composite
def event_records(draw: st.DrawFn, mid: str) -> Fuzzed:
    """A valid event, then zero to two mutations, each either harmless or fatal. A later mutation
    may overwrite an earlier one (null out ``info`` after poisoning ``info.to``): what is fatal is
    tracked per field, so the expected fate is that of the event as finally written."""
    fuzz_id = f"fz-{uuid.uuid4().hex[:12]}"
    event: dict[str, Any] = sample_event(draw(st.sampled_from(KNOWN_EVENT_TYPES)), mid=mid,
                                         rng=random.Random(draw(st.integers(0, 2**32))),
                                         subscriber_key=draw(st.sampled_from(["ada", "grace", "alan"])),
                                         timestamp_ms=1795400000000)
    event["fuzzId"] = fuzz_id
    fatal: dict[str, str] = {}  # field path → the reason it makes the event fail

    def mutate(path: str, value: Any, reason: str | None = None) -> None:
        for earlier in [p for p in fatal if p == path or p.startswith(path + ".") or path.startswith(p + ".")]:
            del fatal[earlier]
        _set(event, path, value)
        if reason is not None:
            fatal[path] = reason

    utf8_marker = f"utf8-{uuid.uuid4().hex[:8]}"
    for kind in draw(st.lists(st.sampled_from(MUTATIONS), max_size=2)):
        if kind == "null_optional":
            mutate(draw(st.sampled_from(OPTIONAL_TOP + tuple(f"info.{n}" for n in OPTIONAL_INFO))), None)
        elif kind == "unknown_field":
            where = draw(st.sampled_from(["", "info.", "composite."]))
            mutate(where + draw(unknown_names), draw(json_values))
        elif kind == "nul":
            where = draw(st.sampled_from(["info.subscriberKey", "info.reason", "definitionKey", "x_custom"]))
            mutate(where, "before\x00after", "nul_character")
        elif kind == "surrogate":
            mutate(draw(st.sampled_from(["info.to", "x_custom"])), "ab\ud800cd", "lone_surrogate")
        elif kind == "huge_int":
            mutate(draw(st.sampled_from(["timestampUTC", "info.statusCode", "x_counter"])), draw(huge_ints),
                   "integer_out_of_range")
        elif kind == "float_for_int":
            mutate("timestampUTC", draw(st.floats(0.1, 1e12).filter(lambda f: not f.is_integer())), "schema")
        elif kind == "null_required":
            mutate(draw(st.sampled_from(["eventCategoryType", "timestampUTC", "mid"])), None, "schema")
        elif kind == "unknown_type":
            mutate("eventCategoryType", "MobilePush.PushSent", "unknown_type")
        elif kind == "deep":
            depth = draw(st.integers(1, 90) | st.integers(110, 900))
            mutate("x_nested", _nested(depth), "too_deep" if depth >= 110 else None)
        elif kind == "big_string":
            mutate("x_blob", "x" * draw(st.integers(1000, 400 * 1024)))
        elif kind == "invalid_utf8":
            mutate("info.messageKey", utf8_marker, "invalid_utf8")  # its bytes are replaced below
    value = json.dumps(event, ensure_ascii=True, allow_nan=True).encode()
    if fatal.get("info.messageKey") == "invalid_utf8":
        value = value.replace(utf8_marker.encode(), b"bad\xff\xfe")
    reasons = set(fatal.values())
    if reasons:
        return Fuzzed(value, "quarantine", reasons.pop() if len(reasons) == 1 else None, fuzz_id)
    return Fuzzed(value, "deliver", None, fuzz_id)


MUTATIONS = ("null_optional", "unknown_field", "nul", "surrogate", "huge_int", "float_for_int",
             "null_required", "unknown_type", "deep", "big_string", "invalid_utf8")


@st.composite
def hostile_records(draw: st.DrawFn) -> Fuzzed:
    kind = draw(st.sampled_from(["bytes", "truncated", "tombstone", "oversized", "not_an_object"]))
    if kind == "bytes":
        return Fuzzed(draw(st.binary(max_size=300)), "quarantine")
    if kind == "truncated":
        whole = json.dumps(sample_event("EmailSent", mid="1", rng=random.Random(7), timestamp_ms=1)).encode()
        return Fuzzed(whole[: draw(st.integers(0, len(whole) - 1))], "quarantine", "malformed_json")
    if kind == "tombstone":
        return Fuzzed(None, "quarantine", "empty")
    if kind == "oversized":
        size = draw(st.integers(MAX_RECORD_BYTES + 1, 950 * 1024))
        return Fuzzed(b'{"pad": "' + b"p" * size + b'"}', "quarantine", "too_large")
    return Fuzzed(json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode(),
                  "quarantine", "schema")


def records(mid: str) -> st.SearchStrategy[list[Fuzzed]]:
    one = st.tuples(st.one_of(event_records(mid), hostile_records()),
                    st.integers(0, INPUT_TOPIC_PARTITIONS - 1))
    return st.lists(one, min_size=1, max_size=10).map(
        lambda pairs: [_placed(record, partition) for record, partition in pairs])


def _placed(record: Fuzzed, partition: int) -> Fuzzed:
    record.partition = partition
    return record


def _set(event: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, name = dotted.split(".")
    target = event
    for parent in parents:
        if not isinstance(target.get(parent), dict):
            target[parent] = {}
        target = target[parent]
    target[name] = value


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


# -- the pipeline under test --------------------------------------------------------------------
class FuzzRun:
    """One relay, one tenant and one receiver for all examples of a test."""

    def __init__(self, harness: RelayHarness, tenant: Tenant, receiver: RecordingReceiver) -> None:
        self.harness = harness
        self.tenant = tenant
        self.receiver = receiver
        self.quarantined_total = 0
        self.producer = AIOKafkaProducer(bootstrap_servers=harness.settings.kafka_bootstrap, acks="all",
                                          linger_ms=2, max_request_size=2 * 1024 * 1024)

    @property
    def store(self) -> Any:
        assert self.harness.relay is not None
        return self.harness.relay.store

    async def send(self, batch: list[Fuzzed]) -> dict[int, tuple[int, Fuzzed]]:
        """Produce the records, then a marker on every partition; return offsets by partition."""
        futures = [(await self.producer.send(self.harness.topic, r.value, partition=r.partition,
                                             key=b"tombstone" if r.value is None else None), r)
                   for r in batch]
        placed = [(await future, r) for future, r in futures]
        markers = await self.markers()
        return {**{id(r): (meta.offset, r) for meta, r in placed}, **markers}

    async def markers(self) -> dict[int, tuple[int, Fuzzed]]:
        sent = {}
        for partition in range(INPUT_TOPIC_PARTITIONS):
            fuzz_id = f"marker-{uuid.uuid4().hex[:12]}"
            event = {**sample_event("EmailSent", mid=self.tenant.mid, subscriber_key=f"m{partition}"),
                     "fuzzId": fuzz_id}
            marker = Fuzzed(json.dumps(event).encode(), "deliver", None, fuzz_id, partition)
            meta = await (await self.producer.send(self.harness.topic, marker.value, partition=partition))
            sent[id(marker)] = (meta.offset, marker)
        delivered = lambda: {e.get("fuzzId") for e in self.receiver.delivered_events()}  # noqa: E731
        await self.receiver.wait_for(
            lambda: all(m.fuzz_id in delivered() for _, m in sent.values()), timeout=60)
        return sent

    async def committed_past(self, offsets: dict[int, int]) -> bool:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.harness.settings.kafka_bootstrap,
                                    group_id=self.harness.settings.consumer_group, enable_auto_commit=False)
        await consumer.start()
        try:
            for partition, offset in offsets.items():
                committed = await consumer.committed(TopicPartition(self.harness.topic, partition))
                if committed is None or committed <= offset:
                    return False
            return True
        finally:
            await consumer.stop()

    async def check(self, sent: dict[int, tuple[int, Fuzzed]]) -> None:
        topic = self.harness.topic
        rows = await self.store.list_quarantine(limit=100_000)
        per_record = Counter((q.partition, q.offset) for q in rows if q.topic == topic)
        assert all(n == 1 for n in per_record.values()), f"a record quarantined twice: {per_record}"
        reasons = {(q.partition, q.offset): (q.reason, q.detail) for q in rows if q.topic == topic}
        delivered = {e.get("fuzzId") for e in self.receiver.delivered_events()}

        for offset, record in sent.values():
            where = (record.partition, offset)
            in_quarantine = where in reasons
            shown = (record.value or b"")[:300]
            if record.fate == "quarantine":
                assert in_quarantine, f"bad record at {where} is not in quarantine: {shown!r}"
                if record.reason is not None:
                    assert reasons[where][0] == record.reason, (where, reasons[where], shown)
            if record.fate == "deliver":
                assert not in_quarantine, f"good record at {where} was quarantined: {reasons[where]} {shown!r}"
            if in_quarantine:
                assert reasons[where][0], where
                assert record.fuzz_id not in delivered or record.fuzz_id is None, f"{where} delivered and quarantined"
                continue
            assert record.fate != "quarantine"
            fuzz_id = record.fuzz_id
            assert fuzz_id is not None, f"record at {where} is neither delivered nor quarantined: {shown!r}"
            await self.receiver.wait_for(
                lambda fuzz_id=fuzz_id: fuzz_id in {e.get("fuzzId") for e in self.receiver.delivered_events()},
                timeout=30)

        last = {}
        for offset, record in sent.values():
            last[record.partition] = max(offset, last.get(record.partition, -1))
        await eventually(lambda: self.committed_past(last), timeout=30, what=f"offsets committed past {last}")
        self.quarantined_total = len(rows)


@pytest.fixture
async def fuzz_run(kafka: KafkaBroker, tmp_path, receiver: RecordingReceiver):  # type: ignore[no-untyped-def]
    harness = RelayHarness(settings_for(kafka.bootstrap, tmp_path / "data", max_record_bytes=MAX_RECORD_BYTES,
                                        log_level="error"))
    await harness.start()
    run = None
    try:
        tenant, _ = await harness.subscribed_tenant(receiver, ["TransactionalSendEvents.*", "EngagementEvents.*"])
        run = FuzzRun(harness, tenant, receiver)
        await run.producer.start()
        yield run
        await finish(run)
    finally:
        if run is not None:
            await run.producer.stop()
        await harness.close()


async def finish(run: FuzzRun) -> None:
    """The relay is idle: markers add no quarantine row, and every row reaches the topic once."""
    await run.markers()  # everything produced before is settled
    before = len(await run.store.list_quarantine(limit=100_000))
    await run.markers()
    rows = await run.store.list_quarantine(limit=100_000)
    assert len(rows) == before, "the quarantine grew while only valid markers were produced"

    async def all_published() -> bool:
        return all(q.published_at is not None for q in await run.store.list_quarantine(limit=100_000))

    await eventually(all_published, timeout=30, what="every quarantine row published")
    published = await read_topic(run.harness.settings.kafka_bootstrap, run.harness.settings.quarantine_topic,
                                 len(rows), timeout=30)
    coordinates = Counter((m["partition"], m["offset"]) for m in map(json.loads, published))
    assert coordinates == Counter((q.partition, q.offset) for q in rows)
    assert all(len(value) < 200_000 for value in published), "a quarantine message exceeds the cap"


FUZZ_SETTINGS = settings(max_examples=int(os.environ.get("RELAY_FUZZ_EXAMPLES", "40")), deadline=None,
                         suppress_health_check=list(HealthCheck), print_blob=True, database=None)


async def _example(fuzz_run: FuzzRun, data: st.DataObject) -> None:
    batch = data.draw(records(fuzz_run.tenant.mid))
    sent = await fuzz_run.send(batch)
    await fuzz_run.check(sent)


@seed(20261123)
@FUZZ_SETTINGS
@given(data=st.data())
async def test_hostile_records_never_stall_ingest_fixed_seed(fuzz_run: FuzzRun, data: st.DataObject) -> None:
    await _example(fuzz_run, data)


@FUZZ_SETTINGS
@given(data=st.data())
async def test_hostile_records_never_stall_ingest_random_seed(fuzz_run: FuzzRun, data: st.DataObject) -> None:
    """Hypothesis prints the seed and a reproduction blob when this one fails."""
    await _example(fuzz_run, data)
