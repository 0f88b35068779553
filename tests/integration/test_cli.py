"""The registry CLI against a real relay: tables, --json, and clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import orjson
import pytest

from relay.samples import sample_event
from tests.helpers.harness import ADMIN_KEY, RelayHarness
from tests.helpers.kafka import produce
from tests.helpers.polling import eventually
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka


async def relay_cli(harness: RelayHarness, *args: str, key: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update({"RELAY_API_URL": harness.base, "RELAY_ADMIN_KEY": ADMIN_KEY})
    if key:
        env["RELAY_API_KEY"] = key
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_manages_accounts_callbacks_and_subscriptions(relay: RelayHarness,
                                                                receiver: RecordingReceiver) -> None:
    code, out, _ = await relay_cli(relay, "accounts", "create", "Globex", "--mid", "4242", "--json")
    assert code == 0
    account = json.loads(out)
    key = account["apiKey"]
    code, out, _ = await relay_cli(relay, "accounts", "list")
    assert code == 0 and "Globex" in out and "MID" in out.splitlines()[0]

    code, out, err = await relay_cli(relay, "callbacks", "create", "crm", receiver.url, "--max-batch-size", "5",
                                     "--json", key=key)
    assert code == 0, err
    callback = json.loads(out)
    await receiver.wait_for(lambda: bool(receiver.handshakes))
    code, out, err = await relay_cli(relay, "callbacks", "verify", callback["id"],
                                     receiver.handshakes[0]["verificationKey"], key=key)
    assert code == 0 and "True" in out, (out, err)

    code, out, err = await relay_cli(relay, "subs", "create", "bounces", "--callback", callback["id"],
                                     "--type", "TransactionalSendEvents.EmailBounced",
                                     "--filter", "bounceCode=HARD", "--json", key=key)
    assert code == 0, err
    sub = json.loads(out)
    assert sub["filters"] == ["bounceCode=HARD"]
    code, out, _ = await relay_cli(relay, "subs", "pause", sub["id"], "--reason", "maintenance", key=key)
    assert code == 0 and "paused" in out and "maintenance" in out
    code, out, _ = await relay_cli(relay, "subs", "resume", sub["id"], key=key)
    assert code == 0 and "active" in out

    code, out, _ = await relay_cli(relay, "callbacks", "rotate", callback["id"], "--overlap", "60", "--json", key=key)
    assert code == 0 and json.loads(out)["secret"].startswith("whsec_")

    code, _, err = await relay_cli(relay, "callbacks", "delete", callback["id"], key=key)
    assert code == 1 and "409 conflict" in err
    code, _, _ = await relay_cli(relay, "subs", "delete", sub["id"], key=key)
    assert code == 0
    code, out, _ = await relay_cli(relay, "callbacks", "delete", callback["id"], key=key)
    assert code == 0 and "deleted" in out


async def test_cli_errors_name_the_field_and_exit_non_zero(relay: RelayHarness) -> None:
    tenant = await relay.tenant()
    code, _, err = await relay_cli(relay, "subs", "create", "x", "--callback", "cb_nope", "--type", "Nope.Nope",
                                   key=tenant.api.key)
    assert code == 1
    assert "400 invalid" in err and "field: eventCategoryTypes" in err
    code, _, err = await relay_cli(relay, "callbacks", "list", key="wrong-key")
    assert code == 1 and "401" in err


async def test_cli_dead_letters_and_message_status(kafka, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import orjson

    from relay.samples import sample_event
    from tests.helpers.harness import settings_for
    from tests.helpers.kafka import produce

    receiver = await RecordingReceiver(responder=lambda r: 500).start()
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path, retry_schedule="0,50ms",
                                              retry_max_age="300ms", circuit_failure_threshold=1000)).start()
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(receiver, maxBatchSize=1)
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        event = sample_event("EmailBounced", mid=tenant.mid, subscriber_key="ada", message_key="reset-9")
        await produce(kafka.bootstrap, harness.topic, [orjson.dumps(event)], [b"ada"])
        async def listed() -> list[dict[str, Any]]:
            code, out, _ = await relay_cli(harness, "dlq", "list", "--json", key=tenant.api.key)
            assert code == 0, out
            return list(json.loads(out)["data"])

        letters = await eventually(listed, timeout=20, what="a dead letter listed by relay dlq list")
        assert letters[0]["messageKey"] == "reset-9"
        code, out, _ = await relay_cli(harness, "dlq", "show", str(letters[0]["id"]), key=tenant.api.key)
        assert code == 0 and "attempts:" in out and "reset-9" in out
        code, out, _ = await relay_cli(harness, "messages", "--message-key", "reset-9", key=tenant.api.key)
        assert code == 0 and "EmailBounced" in out and "dead" in out
        receiver.responder = None
        code, out, err = await relay_cli(harness, "dlq", "replay", str(letters[0]["id"]), key=tenant.api.key)
        assert code == 0 and "True" in out, err
        await receiver.wait_events(1, timeout=15)
    finally:
        await harness.close()
        await receiver.stop()


async def test_cli_test_sends_limits_and_recovers_a_window(relay: RelayHarness, receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    callback = await tenant.add_callback(receiver, maxBatchSize=10)
    await tenant.subscribe(callback["id"], ["TransactionalSendEvents.*"])
    key = tenant.api.key

    code, out, err = await relay_cli(relay, "callbacks", "test", callback["id"], "--type", "SmsDelivered", key=key)
    assert code == 0 and "True" in out and "200" in out, (out, err)
    assert receiver.delivered()[-1].headers["webhook-test"] == "true"

    code, out, err = await relay_cli(relay, "callbacks", "limit", callback["id"], "--events-per-second", "500",
                                     "--json", key=key)
    assert code == 0, err
    assert json.loads(out)["rateLimit"]["eventsPerSecond"] == 500

    events = [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"s{i}") for i in range(3)]
    await produce(relay.settings.kafka_bootstrap, relay.topic, [orjson.dumps(e) for e in events])
    await receiver.wait_events(4)
    started = time.time() - 3600
    code, out, err = await relay_cli(relay, "callbacks", "recover", callback["id"], "--since", str(started),
                                     "--json", key=key)
    assert code == 0, err
    recovered = json.loads(out)
    assert recovered["state"] == "done" and recovered["progress"] == {"done": 3, "total": 3}
    assert len([r for r in receiver.delivered() if r.headers.get("webhook-recovered")]) >= 1

    code, out, err = await relay_cli(relay, "operations", "list", "--kind", "recover", key=key)
    assert code == 0 and recovered["id"] in out and "done" in out, (out, err)
    code, _, err = await relay_cli(relay, "operations", "cancel", recovered["id"], key=key)
    assert code != 0 and "409" in err


async def test_cli_creates_callbacks_with_every_delivery_option(relay: RelayHarness,
                                                                receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    code, out, err = await relay_cli(
        relay, "callbacks", "create", "full", receiver.url, "--ed25519", "--timeout", "5", "--retry-schedule",
        "0,1,5", "--max-in-flight", "4", "--events-per-second", "100", "--header", "X-Team=payments",
        "--transformation", "{id: eventId}", "--format", "cloudevents", "--json",
        key=tenant.api.key)
    assert code == 0, err
    created = json.loads(out)
    assert created["timeout"] == 5 and created["retrySchedule"] == [0, 1, 5] and created["maxInFlight"] == 4
    assert created["rateLimit"]["eventsPerSecond"] == 100 and created["auth"]["headers"] == ["x-team"]
    assert created["publicKeys"] and created["publicKeys"][0].startswith("whpk_")
    assert created["transformation"] == "{id: eventId}" and created["format"] == "cloudevents"
    code, _, err = await relay_cli(relay, "callbacks", "create", "bad", receiver.url, "--header", "novalue",
                                   key=tenant.api.key)
    assert code != 0 and "NAME=VALUE" in err


async def test_cli_updates_callbacks_and_subscriptions_field_by_field(relay: RelayHarness,
                                                                      receiver: RecordingReceiver) -> None:
    tenant = await relay.tenant()
    callback = await tenant.add_callback(receiver, maxBatchSize=7)
    key = tenant.api.key
    code, out, err = await relay_cli(relay, "callbacks", "update", callback["id"], "--retry-max-age", "600",
                                     "--requests-per-second", "5", "--format", "cloudevents", "--json", key=key)
    assert code == 0, err
    updated = json.loads(out)
    assert updated["retryMaxAge"] == 600 and updated["rateLimit"]["requestsPerSecond"] == 5
    assert updated["format"] == "cloudevents" and updated["maxBatchSize"] == 7, "untouched fields stay"
    code, _, err = await relay_cli(relay, "callbacks", "update", callback["id"], key=key)
    assert code != 0 and "at least one field" in err

    code, out, err = await relay_cli(relay, "subs", "create", "s", "--callback", callback["id"], "--type",
                                     "TransactionalSendEvents.*", "--paused", "--json", key=key)
    assert code == 0 and json.loads(out)["status"] == "paused", err
    sub = json.loads(out)
    code, out, err = await relay_cli(relay, "subs", "update", sub["id"], "--filter", "bounceCode=HARD",
                                     "--ordering", "messageKey", "--json", key=key)
    assert code == 0, err
    changed = json.loads(out)
    assert changed["filters"] == ["bounceCode=HARD"] and changed["ordering"] == "messageKey"
    assert changed["status"] == "paused" and changed["eventCategoryTypes"] == ["TransactionalSendEvents.*"]
    code, out, _ = await relay_cli(relay, "callbacks", "list", "--help")
    assert "RELAY_API_KEY" in out and "RELAY_API_URL" in out
