"""No input makes the API answer 5xx, on either store: one test per hardening rule."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from relay.metrics import METRICS
from relay.samples import sample_event
from tests.helpers import postgres
from tests.helpers.harness import RelayHarness, Tenant, settings_for
from tests.helpers.kafka import KafkaBroker, free_port, produce
from tests.helpers.polling import eventually
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka
HOOK = "https://hooks.example.com/x"


async def raw_request(harness: RelayHarness, tenant: Tenant | None, method: str, path: str,
                      data: bytes | None = None, content_type: str | None = None) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {tenant.api.key}"} if tenant else {}
    if content_type:
        headers["content-type"] = content_type
    async with aiohttp.ClientSession() as session, session.request(
            method, harness.base + path, data=data, headers=headers) as response:
        assert response.content_type == "application/json", (response.status, await response.text())
        return response.status, await response.json()


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "a\x00b", "url": HOOK}, "name"),
    ({"name": "tab\there", "url": HOOK}, "name"),
    ({"name": "ok", "url": HOOK, "retrySchedule": [1, 2], "x\x00": 1}, "x\x00"),
])
async def test_control_characters_in_a_body_are_a_400_naming_the_field(relay: RelayHarness, body: dict,
                                                                       field: str) -> None:
    tenant = await relay.tenant()
    status, err = await tenant.api.call("POST", "/v1/callbacks", body)
    assert status == 400, err
    assert err["error"]["field"] == field


async def test_control_characters_in_subscription_fields(relay: RelayHarness) -> None:
    tenant = await relay.tenant()
    status, err = await tenant.api.call("POST", "/v1/subscriptions", {
        "name": "s", "callbackId": "cb_x", "eventCategoryTypes": ["EngagementEvents.*"],
        "filters": ["definitionKey=a\x00b"]})
    assert status == 400 and err["error"]["field"] == "filters[0]", err


@pytest.mark.parametrize("path", ["/v1/callbacks/%00", "/v1/callbacks/cb_%00x", "/v1/subscriptions/%01",
                                  "/v1/callbacks/%00/attempts", "/v1/deadletters/99999999999999999999",
                                  "/v1/deadletters/9223372036854775808"])
async def test_path_ids_no_store_can_hold_are_404(relay: RelayHarness, path: str) -> None:
    tenant = await relay.tenant()
    status, err = await raw_request(relay, tenant, "GET", path)
    assert status == 404, err


@pytest.mark.parametrize("query", ["cursor=99999999999999999999", "cursor=%C2%B2", "limit=%C2%B2",
                                   "limit=0", "limit=99999999999999999999999", "since=nan", "since=inf",
                                   "since=1e400", "until=-1", "since=%00", "callbackId=%00"])
async def test_query_values_out_of_range_are_400(relay: RelayHarness, query: str) -> None:
    tenant = await relay.tenant()
    status, err = await raw_request(relay, tenant, "GET", f"/v1/deadletters?{query}")
    assert status == 400, (query, err)


async def test_integers_beyond_64_bits_in_a_body_are_400(relay: RelayHarness) -> None:
    tenant = await relay.tenant()
    status, err = await tenant.api.call("POST", "/v1/deadletters/replay", {"ids": [1, 2**63]})
    assert status == 400 and err["error"]["field"] == "ids[1]", err
    status, err = await tenant.api.call("POST", "/v1/deadletters/replay", {"ids": [2**70]})  # a float to orjson
    assert status == 400 and err["error"]["field"] == "ids", err
    status, err = await tenant.api.call("POST", "/v1/callbacks", {"name": "x", "url": HOOK, "maxBatchSize": 2**64})
    assert status == 400 and err["error"]["field"] == "maxBatchSize", err


@pytest.mark.parametrize("url", [
    "https://xn--zz.example/hook", "https://" + "a" * 64 + ".example.com/hook", "https://exa..mple.com/x",
    "https://hooks.example.com/a b", "https://hooks.example.com/\r\nX: 1", "https://hooks.example.com:0/x",
    "https://hooks.example.com\n/x",
])
async def test_malformed_callback_urls_are_400(relay: RelayHarness, url: str) -> None:
    tenant = await relay.tenant()
    status, err = await tenant.api.call("POST", "/v1/callbacks", {"name": "x", "url": url})
    assert status == 400 and err["error"]["field"] == "url", (url, err)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_non_json_body_on_a_json_route_is_415(relay: RelayHarness, content_type: str | None) -> None:
    tenant = await relay.tenant()
    status, err = await raw_request(relay, tenant, "POST", "/v1/callbacks",
                                    b'{"name": "x", "url": "https://hooks.example.com/x"}', content_type)
    assert status == 415, err
    assert err["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("text", ["==", "definitionKey==welcome", "definitionKey=!x", "=x", "bounceCode="])
async def test_malformed_filters_are_400(relay: RelayHarness, text: str) -> None:
    tenant = await relay.tenant()
    status, err = await tenant.api.call("POST", "/v1/subscriptions", {
        "name": "s", "callbackId": "cb_x", "eventCategoryTypes": ["EngagementEvents.*"], "filters": [text]})
    assert status == 400 and err["error"]["field"] == "filters", (text, err)


async def test_oversized_query_strings_and_request_lines_get_the_json_error_shape(relay: RelayHarness) -> None:
    tenant = await relay.tenant()
    status, err = await raw_request(relay, tenant, "GET", "/v1/callbacks?" + "a=1&" * 1500)
    assert status == 400 and err["error"]["code"] == "query_too_long", err
    status, err = await raw_request(relay, tenant, "GET", "/v1/callbacks?a=" + "x" * 20_000)
    assert status == 400 and err["error"]["code"] == "bad_request", err


async def test_the_key_id_is_called_key_id_everywhere(relay: RelayHarness) -> None:
    _, account = await relay.admin.call("POST", "/v1/accounts", {"name": "K", "mid": "424242"}, expect=201)
    _, key = await relay.admin.call("POST", f"/v1/accounts/{account['id']}/keys", {"name": "ci"}, expect=201)
    _, keys = await relay.admin.call("GET", f"/v1/accounts/{account['id']}/keys", expect=200)
    assert {k["keyId"] for k in keys["data"]} == {account["keyId"], key["keyId"]}
    assert not any("id" in k for k in keys["data"])


async def test_bulk_dead_letter_actions_need_a_filter_or_all(relay: RelayHarness) -> None:
    tenant = await relay.tenant()
    for path in ("/v1/deadletters/replay", "/v1/deadletters/purge"):
        status, err = await tenant.api.call("POST", path, {})
        assert status == 400 and err["error"]["code"] == "selection_required", err
    await tenant.api.call("POST", "/v1/deadletters/purge", {"all": True}, expect=200)
    await tenant.api.call("POST", "/v1/deadletters/replay", {"all": True}, expect=202)
    await tenant.api.call("POST", "/v1/deadletters/purge", {"reason": "exhausted"}, expect=200)


async def test_replaying_to_a_disabled_callback_is_409_unless_asked_to_enable_it(
        kafka: KafkaBroker, tmp_path: Path) -> None:
    receiver = await RecordingReceiver(responder=lambda r: web.Response(status=500)).start()
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path, retry_schedule="0,50ms",
                                              retry_max_age="300ms", circuit_failure_threshold=1000)).start()
    try:
        tenant, cb = await harness.subscribed_tenant(receiver, ["TransactionalSendEvents.*"], maxBatchSize=1)
        event = sample_event("EmailSent", mid=tenant.mid, subscriber_key="s1")
        await produce(kafka.bootstrap, harness.topic, [orjson.dumps(event)], [b"s1"])

        async def dead() -> Any:
            _, page = await tenant.api.call("GET", "/v1/deadletters")
            return page["data"]

        [letter] = await eventually(dead, timeout=30, what="one dead letter")
        await tenant.api.call("PATCH", f"/v1/callbacks/{cb['id']}", {"enabled": False}, expect=200)
        status, err = await tenant.api.call("POST", f"/v1/deadletters/{letter['id']}/replay")
        assert status == 409 and err["error"]["code"] == "callback_disabled", err
        assert "disabled by its owner" in err["error"]["message"]
        status, err = await tenant.api.call("POST", "/v1/deadletters/replay", {"callbackId": cb["id"]})
        assert status == 409, err
        receiver.responder = None
        await tenant.api.call("POST", f"/v1/deadletters/{letter['id']}/replay", {"enableCallback": True},
                              expect=202)
        _, callback = await tenant.api.call("GET", f"/v1/callbacks/{cb['id']}", expect=200)
        assert callback["enabled"] is True
        await receiver.wait_events(1, timeout=30)
    finally:
        await harness.close()
        await receiver.stop()


async def test_an_activity_stream_ends_soon_after_its_key_is_revoked(relay: RelayHarness) -> None:
    tenant = await relay.tenant()
    _, key = await relay.admin.call("POST", f"/v1/accounts/{tenant.account['id']}/keys", {"name": "tv"},
                                    expect=201)
    async with aiohttp.ClientSession() as session, session.get(
            relay.base + "/v1/activity/stream", headers={"authorization": f"Bearer {key['apiKey']}"},
            timeout=aiohttp.ClientTimeout(total=30)) as response:
        await response.content.readuntil(b"\n\n")
        await relay.admin.call("DELETE", f"/v1/accounts/{tenant.account['id']}/keys/{key['keyId']}",
                               expect=204)
        rest = await response.content.read()  # returns when the server ends the stream
    assert b"event: end" in rest and b"revoked" in rest


@pytest.mark.skipif(postgres.testing_postgres(), reason="the SQLite file exists only on the SQLite store")
async def test_sqlite_files_are_owner_only(relay: RelayHarness) -> None:
    data = Path(relay.settings.data_dir)
    files = [p for p in data.glob("relay.db*")]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))


async def test_metrics_on_their_own_listener_and_without_per_callback_labels(
        kafka: KafkaBroker, tmp_path: Path, receiver: RecordingReceiver) -> None:
    port = free_port()
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path, metrics_listen=f"127.0.0.1:{port}",
                                              metrics_per_callback=False)).start()
    try:
        tenant, cb = await harness.subscribed_tenant(receiver, ["TransactionalSendEvents.*"])
        await produce(kafka.bootstrap, harness.topic,
                      [orjson.dumps(sample_event("EmailSent", mid=tenant.mid, subscriber_key="m"))], [b"m"])
        await receiver.wait_events(1)
        async with aiohttp.ClientSession() as session:
            async with session.get(harness.base + "/metrics") as response:
                assert response.status == 404
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
        assert 'relay_delivered_events_total{callback_id="all"}' in text
        assert cb["id"] not in text
    finally:
        await harness.close()
        METRICS.per_callback = True


def test_a_busy_port_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "RELAY_API_LISTEN": f"127.0.0.1:{port}", "RELAY_DATA_DIR": str(tmp_path)}
        result = subprocess.run([sys.executable, "-m", "relay.cli", "serve"], env=env, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "RELAY_API_LISTEN" in lines[0] and str(port) in lines[0]
