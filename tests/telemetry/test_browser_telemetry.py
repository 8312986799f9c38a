"""The tap page and the dashboard in headless Chromium."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page, expect

from bus.telemetry import MetricsSnapshot
from tests.chat.conftest import ChatSystem
from tests.chat.test_browser import page  # noqa: F401
from tests.helpers import Collector


async def test_the_tap_page_shows_one_sessions_messages_live(chat: ChatSystem, page: Page) -> None:  # noqa: F811
    errors: list[Any] = []
    page.on("pageerror", lambda exc: errors.append(exc))  # noqa: PLW0108
    mine, other = await chat.ws("ada"), await chat.ws("grimm")
    session = (await mine.start())["session_id"]
    await other.start()
    await page.goto(f"{chat.url}/tap?session={session}")
    await expect(page.locator("body")).to_have_attribute("data-live", "1")
    await other.say("Ahoy there")
    await other.reply()
    await mine.say("Tell me about gears")
    await mine.reply()
    rows = page.locator("#messages li")
    await expect(page.locator('#messages li[data-type="chat.reply"]')).to_have_count(1)
    await expect(page.locator('#messages li[data-type="chat.delta"]').first).to_be_visible()
    sessions = {await r.get_attribute("data-session") for r in await rows.all()}
    assert sessions == {session}  # the other session's traffic is filtered out
    reply = page.locator('#messages li[data-type="chat.reply"]')
    await reply.locator("summary").click()
    await expect(reply.locator("pre")).to_contain_text("Hello there! I am glad you came.")
    shown = await rows.count()
    await page.click("#pause")
    await mine.say("Still there?")
    await mine.reply()
    await expect(page.locator("#counts")).to_contain_text("while paused")
    assert await rows.count() == shown
    assert not errors


async def test_the_dashboard_draws_a_turns_latency_waterfall(chat: ChatSystem, page: Page) -> None:  # noqa: F811
    watch = Collector(chat.endpoints, ("telemetry.metrics",))
    await watch.start()
    ws = await chat.ws("ada")
    session = (await ws.start())["session_id"]
    await ws.say("How do clocks work?")
    await ws.reply()
    await watch.expect(MetricsSnapshot, lambda b: b.histograms["total_ms"]["count"] >= 1 and b.sink["buffered"] == 0)
    n = len(watch.seen)
    await watch.expect_n(MetricsSnapshot, n + 1)
    await watch.close()
    await page.goto(f"{chat.url}/telemetry#{session}")
    await expect(page.locator(f'#sessions tr[data-session="{session}"]')).to_be_visible()
    fall = page.locator('.waterfall[data-turn="1"]')
    await expect(fall).to_be_visible()
    for hop in ("user_input", "llm_first_token", "first_frame_sent", "reply_end"):
        await expect(fall.locator(f'.hop[data-hop="{hop}"]')).to_be_visible()
    await expect(page.locator('#percentiles tr[data-metric="ttft_ms"] td').nth(1)).not_to_have_text("0")
    await expect(page.locator('#timeline li[data-type="chat.reply"]')).to_have_count(1)
