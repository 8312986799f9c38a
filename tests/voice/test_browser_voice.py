"""Talking to a character in headless Chromium with a fake microphone (a WAV of a spoken
question, looped by Chromium): the page captures it in an AudioWorklet, streams it, shows
the transcript, and plays the character's voice."""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.chat.conftest import ChatSystem
from tests.chat.test_browser import ARGS, CHROMIUM
from tests.fakes.openai_server import Behaviour
from tests.voice.audio import MIC_RATE, silence, speech


@pytest.fixture
def question_wav(tmp_path: Path) -> Path:
    pcm = np.concatenate([silence(1.0), speech("What is the capital of France?"), silence(4.0)])
    path = tmp_path / "question.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIC_RATE)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


@pytest.fixture
async def page(question_wav: Path) -> AsyncIterator[Page]:
    mic = [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={question_wav}", "--autoplay-policy=no-user-gesture-required",
    ]  # fmt: skip
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS + mic, headless=True)
        context = await browser.new_context(permissions=["microphone"])
        yield await context.new_page()
        await browser.close()


async def test_talk_to_a_character_with_the_microphone(chat: ChatSystem, page: Page) -> None:
    chat.llm.default = Behaviour(text="[happy] Paris is the capital of France. It is a lovely city.")
    errors: list[Any] = []
    page.on("pageerror", lambda exc: errors.append(exc))  # noqa: PLW0108 (playwright wants a Python callable)
    await page.goto(chat.url + "/")
    await page.click("button[data-character=ada]")
    await expect(page.locator("#status")).to_have_attribute("data-status", "idle")
    await page.click("#mic")
    await expect(page.locator("#mic")).to_have_attribute("aria-pressed", "true")
    said = page.locator("#log li.user:not(.interim)").first
    await expect(said).to_contain_text("what is the capital of", ignore_case=True, timeout=20_000)
    await expect(page.locator("#log li.assistant").nth(1)).to_contain_text("Paris is the capital", timeout=10_000)
    await page.wait_for_function("window.greenroomAudio.playedSamples > 48000 * 0.5", timeout=20_000)
    stats = await page.evaluate("window.greenroomAudio")
    assert stats["sentChunks"] > 50 and stats["receivedSamples"] >= stats["playedSamples"] > 0
    assert not errors
