"""What endpoints receive, their way: JMESPath transformations (previewed, applied, failing per
event without stalling), and CloudEvents 1.0 with the CloudEvents validation handshake."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from relay.samples import sample_event
from tests.helpers.harness import RelayHarness, Tenant
from tests.helpers.kafka import produce
from tests.helpers.polling import eventually
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka
SHAPE = "{id: eventId, kind: eventCategoryType, who: info.subscriberKey, code: info.bounceCode}"


async def send(relay: RelayHarness, events: list[dict[str, Any]]) -> None:
    await produce(relay.settings.kafka_bootstrap, relay.topic, [orjson.dumps(e) for e in events],
                  [e["info"]["subscriberKey"].encode() for e in events])


async def test_transform_preview_shows_the_result_or_the_precise_error(relay: RelayHarness) -> None:
    tenant = await relay.tenant()
    event = {"eventId": "e1", **sample_event("EmailBounced", mid=tenant.mid, subscriber_key="ada")}
    _, ok = await tenant.api.call("POST", "/v1/callbacks/transform-preview",
                                  {"transformation": SHAPE, "event": event}, expect=200)
    assert ok["ok"] is True and ok["result"]["who"] == "ada" and ok["result"]["id"] == "e1"
    _, ce = await tenant.api.call("POST", "/v1/callbacks/transform-preview",
                                  {"transformation": "info", "event": event, "format": "cloudevents"}, expect=200)
    assert ce["result"]["specversion"] == "1.0" and ce["result"]["data"]["subscriberKey"] == "ada"
    _, empty = await tenant.api.call("POST", "/v1/callbacks/transform-preview",
                                     {"transformation": "info.nothing", "event": event}, expect=200)
    assert empty["ok"] is False and "null" in empty["error"]
    for bad, field in (({"transformation": "{id: eventId", "event": event}, "transformation"),
                       ({"transformation": 5, "event": event}, "transformation"),
                       ({"transformation": "info", "event": [1]}, "event"),
                       ({"transformation": "info", "event": event, "format": "xml"}, "format")):
        status, err = await tenant.api.call("POST", "/v1/callbacks/transform-preview", bad)
        assert status == 400 and err["error"]["field"] == field, (bad, err)
        if field == "transformation" and isinstance(bad["transformation"], str):
            assert "parse" in err["error"]["message"]


async def test_a_transformation_reshapes_each_event_and_one_that_fails_dead_letters_only_that_event(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    status, err = await tenant.api.call("POST", "/v1/callbacks", {"name": "x", "url": receiver.url,
                                                                 "transformation": "{a: "})
    assert status == 400 and err["error"]["field"] == "transformation"
    # abs() refuses the null that to_number gives for a subscriberKey that is not a number: that event
    # alone becomes a dead letter.
    cb = await tenant.add_callback(receiver, maxBatchSize=10,
                                   transformation="{id: eventId, n: abs(to_number(info.subscriberKey))}")
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
    await send(relay, [sample_event("EmailSent", mid=tenant.mid, subscriber_key=key) for key in ("1", "two", "3")])
    await receiver.wait_events(2, timeout=30)
    received = receiver.delivered_events()
    assert sorted(e["n"] for e in received) == [1, 3] and all(set(e) == {"id", "n"} for e in received)
    assert all(r.verified for r in receiver.delivered()), "the transformed body is what is signed"

    async def refused() -> Any:
        _, page = await tenant.api.call("GET", "/v1/deadletters")
        return page["data"]

    [letter] = await eventually(refused, what="the event the transformation refused, dead-lettered")
    assert letter["subscriberKey"] == "two" and letter["reason"].startswith("transformation failed")


async def test_cloudevents_callbacks_validate_the_cloudevents_way_and_receive_cloudevents(
        relay: RelayHarness) -> None:
    validation = {"WebHook-Allowed-Origin": "*", "WebHook-Allowed-Rate": "600"}
    receiver = await RecordingReceiver(validation=validation).start()
    try:
        tenant = await relay.tenant()
        _, cb = await tenant.api.call("POST", "/v1/callbacks", {
            "name": "ce", "url": receiver.url, "format": "cloudevents", "maxBatchSize": 1, "transformation": "info",
        }, expect=201)
        receiver.secrets.append(cb["secret"])

        async def verified() -> Any:
            _, current = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}", expect=200)
            return current if current["verified"] else None

        current = await eventually(verified, what="the CloudEvents validation handshake verifying the callback")
        assert current["rateLimit"]["requestsPerSecond"] == 10, "WebHook-Allowed-Rate (per minute) is its limit"
        assert receiver.validations[0]["webhook-request-origin"] == relay.settings.webhook_origin
        assert receiver.handshakes == [], "no key to paste for an endpoint that validated"
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        event = sample_event("EmailBounced", mid=tenant.mid, subscriber_key="ada")
        await send(relay, [event])
        await receiver.wait_for(lambda: len(receiver.delivered()) >= 1, timeout=30)
        request = receiver.delivered()[0]
        assert request.headers["content-type"] == "application/cloudevents+json" and request.verified
        body = orjson.loads(request.body)
        assert body["specversion"] == "1.0" and body["type"] == "ens.TransactionalSendEvents.EmailBounced"
        assert body["source"] == f"urn:ens:mid:{tenant.mid}" and body["subject"] == "ada"
        assert body["data"] == event["info"] and body["time"].endswith("Z") and body["id"]

        # Test sends and recoveries are shaped like deliveries.
        _, answer = await tenant.api.call("POST", f"/v1/callbacks/{cb['id']}/test", {}, expect=200)
        assert answer["ok"] is True
        test = next(r for r in receiver.delivered() if r.headers.get("webhook-test"))
        assert test.headers["content-type"] == "application/cloudevents+json"
        assert orjson.loads(test.body)["data"]["subscriberKey"].startswith("sub-")
        await tenant.api.call("POST", f"/v1/callbacks/{cb['id']}/recover",
                              {"since": 0, "until": 1e10, "ratePerSecond": 100}, expect=202)

        async def recovered() -> Any:
            return [r for r in receiver.delivered() if r.headers.get("webhook-recovered")]

        [again] = await eventually(recovered, what="the recovery of the one event")
        assert again.headers["content-type"] == "application/cloudevents+json"
        assert orjson.loads(again.body)["id"] == body["id"] and orjson.loads(again.body)["data"] == event["info"]
    finally:
        await receiver.stop()


async def test_a_cloudevents_batch_and_a_refused_validation_falling_back_to_the_key(
        relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant: Tenant = await relay.tenant()
    cb = await tenant.add_callback(receiver, maxBatchSize=10, format="cloudevents")  # no OPTIONS answer: the key
    assert receiver.validations, "the CloudEvents validation was tried first"
    await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
    await send(relay, [sample_event("SmsSent", mid=tenant.mid, subscriber_key="k") for _ in range(3)])
    await receiver.wait_for(lambda: sum(len(orjson.loads(r.body)) for r in receiver.delivered()) >= 3, timeout=30)
    assert {r.headers["content-type"] for r in receiver.delivered()} == {"application/cloudevents-batch+json"}
    events = [e for r in receiver.delivered() for e in orjson.loads(r.body)]
    assert all(e["specversion"] == "1.0" and e["data"]["eventId"] == e["id"] for e in events)
