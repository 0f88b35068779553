"""The dashboard in a real browser (Debian's chromium, headless, driven by Playwright)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from relay.samples import sample_event
from tests.helpers.harness import RelayHarness, Tenant, settings_for
from tests.helpers.kafka import KafkaBroker, produce
from tests.helpers.receiver import RecordingReceiver

pytestmark = pytest.mark.kafka
CHROMIUM = os.environ.get("RELAY_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), f"{CHROMIUM} is missing; .ci/run installs it"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def send(harness: RelayHarness, tenant: Tenant, events: list[dict[str, Any]]) -> None:
    await produce(harness.settings.kafka_bootstrap, harness.topic, [orjson.dumps(e) for e in events],
                  [e["info"]["subscriberKey"].encode() for e in events])


async def save_panel(page: Page, selector: str, name: str) -> None:
    """With RELAY_SAVE_SCREENSHOT=1, refresh docs/console-<name>.png from this panel."""
    if os.environ.get("RELAY_SAVE_SCREENSHOT"):
        await page.locator(selector).screenshot(
            path=str(Path(__file__).resolve().parents[2] / "docs" / f"console-{name}.png"))


async def open_console(browser: Browser, harness: RelayHarness, key: str,
                       height: int = 1400) -> tuple[BrowserContext, Page, list[str]]:
    """A logged-in console page, and the page errors it reports."""
    context = await browser.new_context(viewport={"width": 1280, "height": height}, bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(harness.base + "/ui")
    await page.fill("#api-key", key)
    await page.click("button[type=submit]")
    return context, page, errors


async def number(page: Page, element_id: str) -> int:
    return int(await page.text_content(f"#{element_id}") or "0")


async def test_dashboard_live_counts_search_and_replay(kafka: KafkaBroker, tmp_path: Path,
                                                       browser: Browser) -> None:
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path, retry_schedule="0,50ms",
                                              retry_max_age="500ms", circuit_failure_threshold=1000)).start()
    healthy = await RecordingReceiver().start()
    broken = await RecordingReceiver(responder=lambda r: web.Response(status=500, text="down")).start()
    try:
        tenant = await harness.tenant()
        good = await tenant.add_callback(healthy, name="crm", maxBatchSize=10)
        await tenant.subscribe(good["id"], ["TransactionalSendEvents.*"])
        bad = await tenant.add_callback(broken, name="legacy", maxBatchSize=1)
        await tenant.subscribe(bad["id"], ["TransactionalSendEvents.EmailBounced"])
        await harness.refresh_routing()

        first = [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"s{i}") for i in range(5)]
        bounce = sample_event("EmailBounced", mid=tenant.mid, subscriber_key="ada", message_key="reset-42")
        await send(harness, tenant, [*first, bounce])
        await healthy.wait_events(6)

        # bypass_csp lets Playwright evaluate its own waits; the page keeps its strict CSP for users
        context = await browser.new_context(viewport={"width": 1280, "height": 1100}, bypass_csp=True)
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(harness.base + "/ui")
        await page.fill("#api-key", tenant.api.key)
        await page.click("button[type=submit]")
        await page.wait_for_selector("#dashboard:not([hidden])")

        await page.wait_for_function("Number(document.getElementById('count-sent').textContent) >= 5")
        assert await number(page, "count-bounced") == 1
        await send(harness, tenant, [sample_event("SmsSent", mid=tenant.mid, subscriber_key=f"t{i}")
                                     for i in range(3)]
                   + [sample_event("SmsDelivered", mid=tenant.mid, subscriber_key=f"t{i}") for i in range(2)])
        await page.wait_for_function("Number(document.getElementById('count-sent').textContent) >= 8",
                                     timeout=15000)
        assert await number(page, "count-delivered") == 2
        assert await page.locator("#chart rect").count() >= 1, "the per-minute chart draws the counts"
        # Webhook deliveries are counted apart from the "Delivered" event type: the healthy endpoint
        # took POSTs, the broken one failed (retrying) and gave up (dead).
        await page.wait_for_function("Number(document.getElementById('hooks-delivered').textContent) >= 1 && "
                                     "Number(document.getElementById('hooks-retry').textContent) >= 1 && "
                                     "Number(document.getElementById('hooks-dead').textContent) >= 1",
                                     timeout=15000)
        assert await number(page, "hooks-events") >= 8
        assert await page.locator("#hooks-chart rect").count() >= 1, "webhook POSTs per minute are drawn"

        await page.fill("#search-value", "reset-42")
        await page.click("#search-form button")
        await page.wait_for_selector("#timeline tbody tr")
        row = await page.text_content("#timeline tbody tr")
        assert row is not None and "EmailBounced" in row and "crm: delivered" in row

        await page.wait_for_selector("#deadletters button.replay", timeout=20000)
        await page.wait_for_selector("#callbacks tbody tr >> text=legacy")
        broken.responder = None
        await page.click("#deadletters button.replay")
        await broken.wait_events(1, timeout=15)
        assert broken.delivered_events()[0]["info"]["messageKey"] == "reset-42"

        await asyncio.sleep(0.5)
        await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        if os.environ.get("RELAY_SAVE_SCREENSHOT"):
            shutil.copy(tmp_path / "dashboard.png", Path(__file__).resolve().parents[2] / "docs" / "dashboard.png")
        assert errors == []
    finally:
        await harness.close()
        await healthy.stop()
        await broken.stop()


async def test_dashboard_test_send_rate_limit_and_a_recovery_with_pause(kafka: KafkaBroker, tmp_path: Path,
                                                                        browser: Browser) -> None:
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path)).start()
    receiver = await RecordingReceiver().start()
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(receiver, name="crm", maxBatchSize=1, headers={"X-Team": "crm"})
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        await tenant.api.call("PATCH", f"/v1/callbacks/{cb['id']}", {"rateLimit": {"eventsPerSecond": 250}},
                              expect=200)
        await harness.refresh_routing()
        await send(harness, tenant, [sample_event("EmailSent", mid=tenant.mid, subscriber_key=f"s{i}")
                                     for i in range(4)])
        await receiver.wait_events(4)

        context, page, errors = await open_console(browser, harness, tenant.api.key)
        await page.wait_for_selector("#callbacks td:has-text('250 ev/s')")
        assert await page.text_content("#callbacks td.calls-as") == "ENS · headers: x-team"

        await page.click("#callbacks button.test-send")
        await page.wait_for_selector("#callbacks .test-result.ok:has-text('200 in')")
        await page.click("#callbacks a.open-callback")
        await page.wait_for_selector("#callback-detail:not([hidden]) #detail-attempts tbody tr")
        assert "circuit closed" in (await page.text_content("#detail-summary") or "")
        assert await page.locator("#detail-chart rect").count() >= 1, "POSTs per minute are drawn"
        await save_panel(page, "#callback-detail", "callback")
        assert receiver.delivered()[-1].headers["webhook-test"] == "true"

        await page.fill("#recover-minutes", "60")
        await page.fill("#recover-rate", "1")
        await page.click("#recover-form button[type=submit]")
        row = "#operations tbody tr"
        await page.wait_for_selector(f"{row} button.op-pause")
        await page.click(f"{row} button.op-pause")
        await page.wait_for_selector(f"{row} td:has-text('paused')")
        await page.click(f"{row} button.op-resume")
        await page.wait_for_selector(f"{row} td:has-text('done')", timeout=60_000)
        await save_panel(page, "#recover-form >> xpath=..", "operations")
        assert "4 / 4" in (await page.text_content(f"{row} td.progress") or "")
        recovered = [r for r in receiver.delivered() if r.headers.get("webhook-recovered") == "true"]
        assert {e["eventId"] for r in recovered for e in r.json} >= {
            e["eventId"] for r in receiver.delivered()[:4] for e in r.json}
        assert errors == []
        await context.close()
    finally:
        await harness.close()
        await receiver.stop()


async def test_dashboard_dead_letters_filter_drill_down_and_replay(kafka: KafkaBroker, tmp_path: Path,
                                                                   browser: Browser) -> None:
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path, retry_schedule="0,50ms",
                                              retry_max_age="500ms", circuit_failure_threshold=1000)).start()
    broken = await RecordingReceiver(responder=lambda r: web.Response(status=500, text="down")).start()
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(broken, name="legacy", maxBatchSize=1)
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        await harness.refresh_routing()
        await send(harness, tenant, [sample_event("EmailBounced", mid=tenant.mid, subscriber_key=f"b{i}")
                                     for i in range(3)]
                   + [sample_event("SmsSent", mid=tenant.mid, subscriber_key="s0")]
                   + [{**sample_event("EmailSent", mid=tenant.mid, subscriber_key="q"), "eventCategoryType": "Nope.X"}])

        context, page, errors = await open_console(browser, harness, tenant.api.key)
        await page.wait_for_function("document.querySelectorAll('#deadletters tbody tr').length >= 4",
                                     timeout=30000)
        assert "legacy" in (await page.text_content("#deadletters tbody tr") or ""), "callbacks by name"
        await page.wait_for_selector("#quarantine tbody tr td:has-text('unknown_type')")
        assert "Nope.X" in (await page.text_content("#quarantine tbody tr td.excerpt") or "")

        await page.fill("#dlq-type", "TransactionalSendEvents.EmailBounced")
        await page.click("#dlq-filter button[type=submit]")
        await page.wait_for_function("document.querySelectorAll('#deadletters tbody tr').length === 3")
        await page.click("#deadletters tbody tr >> nth=0 >> button.show-attempts")
        await page.wait_for_selector("#deadletters tr.attempts li:has-text('HTTP 500')")
        await save_panel(page, "#deadletters >> xpath=..", "deadletters")
        await save_panel(page, "#quarantine >> xpath=..", "quarantine")

        broken.responder = None  # the endpoint is fixed
        await page.check("#deadletters tbody tr[data-id] >> nth=1 >> input.pick")
        await page.click("#dlq-replay-selected")
        await broken.wait_events(1, timeout=30)
        await page.click("#dlq-replay-all")  # the two bounces left (the SMS is outside the filter)
        await broken.wait_events(3, timeout=30)
        await page.wait_for_selector("#operations tbody tr td:has-text('done')", timeout=30000)
        delivered = {e["info"]["subscriberKey"] for e in broken.delivered_events()}
        assert delivered == {"b0", "b1", "b2"}, delivered
        await page.fill("#dlq-type", "")
        await page.click("#dlq-filter button[type=submit]")
        await page.wait_for_function("document.querySelectorAll('#deadletters tbody tr').length === 1")
        assert errors == []
        await context.close()
    finally:
        await harness.close()
        await broken.stop()


async def test_dashboard_shows_a_failing_callback_since_when_and_its_next_try(kafka: KafkaBroker, tmp_path: Path,
                                                                             browser: Browser) -> None:
    harness = await RelayHarness(settings_for(kafka.bootstrap, tmp_path, retry_schedule="0,1h",
                                              retry_max_age="3h")).start()
    broken = await RecordingReceiver(responder=lambda r: web.Response(status=503, text="maintenance")).start()
    try:
        tenant = await harness.tenant()
        cb = await tenant.add_callback(broken, name="billing", maxBatchSize=1)
        await tenant.subscribe(cb["id"], ["TransactionalSendEvents.*"])
        await harness.refresh_routing()
        await send(harness, tenant, [sample_event("EmailSent", mid=tenant.mid, subscriber_key="k")])
        await broken.wait_for(lambda: len(broken.requests) >= 1, timeout=30)

        context, page, _ = await open_console(browser, harness, tenant.api.key, height=1100)
        # Which callback fails, what it answered, and when it is tried next (an hour, not stuck):
        await page.wait_for_function(
            "[...document.querySelectorAll('#callbacks td.next-retry')].some(td => td.textContent !== '\\u2013')",
            timeout=30000)
        row = await page.text_content("#callbacks tbody tr") or ""
        assert "billing" in row and "503 maintenance" in row, row
        await page.click("#callbacks a.open-callback")
        await page.wait_for_selector("#callback-detail:not([hidden]) #detail-attempts tbody tr")
        summary = await page.text_content("#detail-summary") or ""
        assert "failing since" in summary and "next retry" in summary and "1 pending" in summary, summary
        assert "maintenance" in (await page.text_content("#detail-attempts tbody tr") or "")
        await context.close()
    finally:
        await harness.close()
        await broken.stop()
