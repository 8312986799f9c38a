"""The chat page in headless Chromium (Debian's, driven by Playwright): chat, reload, history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.chat.conftest import ChatSystem

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = await browser.new_context()
        yield await context.new_page()
        await browser.close()


async def test_chat_in_the_browser_and_history_after_reload(chat: ChatSystem, page: Page) -> None:
    errors: list[Any] = []
    page.on("pageerror", lambda exc: errors.append(exc))  # noqa: PLW0108 (playwright wants a Python callable)
    await page.goto(chat.url + "/")
    await page.click("button[data-character=ada]")
    log = page.locator("#log li")
    await expect(log.first).to_have_text("Hi! I'm Ada. Ask me how anything works!")
    await expect(page.locator("#status")).to_have_attribute("data-status", "idle")
    await page.fill("#text", "Hello from the browser")
    await page.click("#send")
    await expect(log).to_have_count(3)
    await expect(log.nth(2)).to_have_text("Hello there! I am glad you came. What shall we talk about?")
    await expect(page.locator("#emotion")).to_have_text("happy")
    await page.reload()
    await expect(log).to_have_count(3)  # restored from the server, not from the page
    assert [await t.text_content() for t in await log.all()] == [
        "Hi! I'm Ada. Ask me how anything works!",
        "Hello from the browser",
        "Hello there! I am glad you came. What shall we talk about?",
    ]
    await expect(page.locator("#status")).to_have_attribute("data-status", "idle")
    await page.fill("#text", "Still there?")
    await page.click("#send")
    await expect(log).to_have_count(5)
    assert not errors
