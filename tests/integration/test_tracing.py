"""One trace id from the producer's Kafka record to the subscriber's HTTP request (W3C Trace Context)."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from relay.samples import sample_event
from tests.helpers.harness import RelayHarness
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


async def test_the_producers_trace_reaches_the_post_and_the_message_status(relay: RelayHarness,
                                                                          receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver, maxBatchSize=1)
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
    traced = sample_event("EmailBounced", mid=tenant.mid, subscriber_key="ada", message_key="reset-7")
    untraced = sample_event("EmailSent", mid=tenant.mid, subscriber_key="bob", message_key="other")
    producer = AIOKafkaProducer(bootstrap_servers=relay.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(relay.topic, orjson.dumps(traced), key=b"ada",
                                     headers=[("traceparent", PARENT.encode())])
        await producer.send_and_wait(relay.topic, orjson.dumps(untraced), key=b"bob",
                                     headers=[("traceparent", b"00-not-a-valid-trace-01")])
    finally:
        await producer.stop()
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
