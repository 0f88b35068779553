"""One trace from the producer's Kafka record to the subscriber's HTTP request: W3C Trace Context
passed on with tracing off, and OpenTelemetry spans with it on."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from relay.samples import sample_event
from relay.telemetry import Telemetry
from tests.helpers.harness import RelayHarness, settings_for
from tests.helpers.kafka import KafkaBroker
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


async def send_two(harness: RelayHarness, tenant_mid: str, keys: tuple[str, str],
                   second_header: bytes | None) -> None:
    """A bounce for "ada" carrying PARENT, then a send for "bob" with ``second_header`` (or none)."""
    traced = sample_event("EmailBounced", mid=tenant_mid, subscriber_key="ada", message_key=keys[0])
    other = sample_event("EmailSent", mid=tenant_mid, subscriber_key="bob", message_key=keys[1])
    producer = AIOKafkaProducer(bootstrap_servers=harness.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(harness.topic, orjson.dumps(traced), key=b"ada",
                                     headers=[("traceparent", PARENT.encode())])
        await producer.send_and_wait(harness.topic, orjson.dumps(other), key=b"bob",
                                     headers=[] if second_header is None else [("traceparent", second_header)])
    finally:
        await producer.stop()


async def test_the_producers_trace_reaches_the_post_and_the_message_status(relay: RelayHarness,
                                                                          receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver, maxBatchSize=1)
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
    await send_two(relay, tenant.mid, ("reset-7", "other"), b"00-not-a-valid-trace-01")
    await receiver.wait_events(2, timeout=30)
    by_key = {r.json[0]["info"]["subscriberKey"]: r for r in receiver.delivered()}
    sent = by_key["ada"].headers["traceparent"]
    version, trace, span, flags = sent.split("-")
    assert (version, trace, flags) == ("00", TRACE, "01") and span != "00f067aa0ba902b7", sent
    assert "traceparent" not in by_key["bob"].headers, "a malformed header is ignored, not passed on"
    _, status = await tenant.api.call("GET", "/v1/messages?messageKey=reset-7", expect=200)
    assert status["events"][0]["traceId"] == TRACE
    _, other = await tenant.api.call("GET", "/v1/messages?messageKey=other", expect=200)
    assert other["events"][0]["traceId"] is None


async def test_spans_follow_one_event_from_the_record_to_the_post(kafka: KafkaBroker, tmp_path: Path) -> None:
    """With a tracer (here an in-memory exporter; in production OTLP when OTEL_* ask for it), ingest and
    delivery are spans of the producer's trace, and the POST's traceparent is the delivery span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path),
                                 telemetry=Telemetry(provider.get_tracer("test"))).start()
    receiver = await RecordingReceiver().start()
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(receiver, maxBatchSize=1)
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        await send_two(harness, tenant.mid, ("m-1", "m-2"), None)
        await receiver.wait_events(2, timeout=30)
        by_key = {r.json[0]["info"]["subscriberKey"]: r for r in receiver.delivered()}

        spans = {(s.name, s.context.trace_id): s for s in exporter.get_finished_spans()}
        trace = int(TRACE, 16)
        ingest, deliver = spans[("relay.ingest", trace)], spans[("relay.deliver", trace)]
        assert ingest.parent is not None and ingest.parent.span_id == int("00f067aa0ba902b7", 16)
        assert deliver.parent is not None and deliver.parent.span_id == ingest.context.span_id
        assert deliver.attributes is not None and deliver.attributes["relay.callback_id"] == cb["id"]
        assert deliver.attributes["relay.attempt"] == 1 and deliver.attributes["http.response.status_code"] == 200
        assert ingest.attributes is not None and ingest.attributes["messaging.destination.name"] == harness.topic
        assert by_key["ada"].headers["traceparent"] == f"00-{TRACE}-{deliver.context.span_id:016x}-01"

        # A record without a traceparent starts a trace of its own, followed the same way.
        started = by_key["bob"].headers["traceparent"].split("-")[1]
        assert started != TRACE and ("relay.deliver", int(started, 16)) in spans
        _, status = await tenant.api.call("GET", "/v1/messages?messageKey=m-2", expect=200)
        assert status["events"][0]["traceId"] == started
    finally:
        await harness.close()
        await receiver.stop()
