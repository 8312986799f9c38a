"""DashScope speech through the real ``dashscope`` SDK against a local server speaking its
WebSocket protocol: CosyVoice (run-task / continue-task / finish-task, binary audio) and
Paraformer; a bad key and ``task-failed`` are clear errors and the session goes on."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from actors import Actor
from actors.dashscope_speech import CosyVoiceSynthesizer, ParaformerRecognizer
from actors.resampler import Resampler
from actors.speech import SpeechError
from actors.stt import SttWorker
from actors.tts import TtsWorker
from tests.chat.conftest import ChatSystem
from tests.fakes.dashscope_server import MS_PER_CHAR, FakeDashScope
from tests.fakes.openai_server import Behaviour
from tests.voice.audio import MIC_RATE, silence, speech, stream

VOICE = "cosyvoice-v2:longxiaochun"


@pytest.fixture
async def dashscope() -> AsyncIterator[FakeDashScope]:
    server = FakeDashScope(api_key="sk-test")
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def dashscope_key() -> str:
    return "sk-test"


@pytest.fixture
def more_actors(monkeypatch: pytest.MonkeyPatch, dashscope: FakeDashScope, dashscope_key: str) -> list[type[Actor]]:
    """The voice actors, configured for DashScope speech both ways."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", dashscope_key)
    monkeypatch.setenv("DASHSCOPE_WEBSOCKET_BASE_URL", dashscope.url)
    monkeypatch.setenv("GREENROOM_TTS_VOICE", VOICE)
    monkeypatch.setenv("GREENROOM_STT_MODEL", "dashscope:paraformer-realtime-v2")
    return [SttWorker, TtsWorker, Resampler]


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """The SDK's calls block: run them as the workers do, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_cosyvoice_adapter_speaks_and_reports_failures(dashscope: FakeDashScope) -> None:
    tts = CosyVoiceSynthesizer(VOICE, "sk-test", dashscope.url)
    pcm = await in_thread(tts.synthesize, "Hello there!")
    assert tts.rate == 24_000 and len(pcm) == 24_000 * MS_PER_CHAR * len("Hello there!") // 1000
    task = dashscope.tasks[-1]
    assert (task["task"], task["model"], task["parameters"]["voice"]) == ("tts", "cosyvoice-v2", "longxiaochun")
    assert task["texts"] == ["Hello there!"]
    with pytest.raises(SpeechError, match="InvalidApiKey"):
        await in_thread(CosyVoiceSynthesizer(VOICE, "sk-wrong", dashscope.url).synthesize, "Hello")
    dashscope.fail_next = "InternalError.Algo"
    with pytest.raises(SpeechError, match=r"InternalError\.Algo"):
        await in_thread(tts.synthesize, "Hello")
    with pytest.raises(SpeechError, match="DASHSCOPE_API_KEY"):
        await in_thread(CosyVoiceSynthesizer(VOICE, "", dashscope.url).synthesize, "Hello")
    with pytest.raises(SpeechError, match="MODEL:VOICE"):
        CosyVoiceSynthesizer("cosyvoice-v2", "sk-test", dashscope.url)


async def test_paraformer_adapter_listens_and_reports_failures(dashscope: FakeDashScope) -> None:
    asr = ParaformerRecognizer("paraformer-realtime-v2", "sk-test", dashscope.url)
    audio = np.zeros(16_000, dtype=np.float32)
    assert await in_thread(asr.transcribe, audio) == dashscope.transcript
    assert dashscope.tasks[-1]["task"] == "asr" and dashscope.audio_bytes_received == 32_000  # every sample sent
    with pytest.raises(SpeechError, match="Invalid API-key"):
        await in_thread(ParaformerRecognizer("paraformer-realtime-v2", "sk-wrong", dashscope.url).transcribe, audio)
    dashscope.fail_next = "ResponseTimeout"
    with pytest.raises(SpeechError, match="ResponseTimeout"):
        await in_thread(asr.transcribe, audio)


async def test_spoken_turn_through_dashscope_both_ways(chat: ChatSystem, dashscope: FakeDashScope) -> None:
    chat.llm.default = Behaviour(text="[happy] Paris! It is lovely.")
    ws = await chat.ws()
    await ws.start(input_type="audio", sample_rate=MIC_RATE)
    await stream(ws.send, np.concatenate([silence(0.3), speech("What is the capital of France?"), silence(0.8)]))
    said = await ws.expect(lambda f: f.get("type") == "transcript" and f.get("speaker") == "user" and f["isFinal"], 15)
    assert said["text"] == dashscope.transcript  # Paraformer's words, not Whisper's
    out = 0
    while (frame := await ws.expect(lambda f: f.get("type") in ("audio", "audio_end"), timeout=15))["type"] == "audio":
        out += len(base64.b64decode(frame["audio_data"])) // 2
    spoken = [t for task in dashscope.tasks if task["task"] == "tts" for t in task["texts"]]
    assert spoken == ["Paris!", "It is lovely."]
    expected = sum(24_000 * MS_PER_CHAR * len(t) // 1000 for t in spoken) * 2  # 24 kHz -> 48 kHz
    assert abs(out - expected) <= 48  # the resampler kept every sample (within a millisecond)
    await ws.close()


@pytest.mark.parametrize("dashscope_key", ["sk-wrong"])
async def test_a_rejected_key_is_a_clear_error_and_the_session_goes_on(chat: ChatSystem) -> None:
    chat.llm.default = Behaviour(text="[happy] Still here, in writing.")
    ws = await chat.ws()
    await ws.start(input_type="audio", sample_rate=MIC_RATE)
    await stream(ws.send, np.concatenate([silence(0.3), speech("Hello there."), silence(0.8)]))
    error = await ws.expect("error", timeout=15)
    assert error["code"] == "stt_failed" and "Invalid API-key" in error["message"]
    await ws.say("Can you hear me?")  # typing still works, and the reply is text without a voice
    assert (await ws.reply(timeout=15))["text"] == "Still here, in writing."

    def tts_failed(f: dict[str, Any]) -> bool:
        return f.get("type") == "error" and f["code"] == "tts_failed"

    tts_error = next((f for f in ws.frames if tts_failed(f)), None) or await ws.expect(tts_failed, timeout=15)
    assert "InvalidApiKey" in tts_error["message"]
    assert not [f for f in ws.frames if f.get("type") == "audio"]
    await ws.close()
