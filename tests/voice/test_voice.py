"""Voice end to end over the WebSocket, on the real local models: a spoken question is
transcribed, answered and spoken back at 48 kHz; speaking over the character stops it
within a chunk and history keeps what was heard; bad audio gets clear errors."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from bus import type_prefix
from bus.voice import TtsAudio
from tests.chat.conftest import WS, ChatSystem
from tests.fakes.openai_server import Behaviour
from tests.helpers import Collector
from tests.voice.audio import MIC_RATE, audio_frame, silence, speech, stream

REPLY = "[happy] Hello there! I am glad you came. What shall we talk about?"
LONG_REPLY = "[curious] " + " ".join(
    f"Sentence number {n} is here to keep me talking for a good long while." for n in range(1, 12)
)


async def audio_session(chat: ChatSystem) -> WS:
    ws = await chat.ws()
    await ws.start(input_type="audio", sample_rate=MIC_RATE)
    return ws


def samples(frame: dict[str, Any]) -> int:
    return len(base64.b64decode(frame["audio_data"])) // 2


async def test_a_spoken_question_is_heard_answered_and_spoken(chat: ChatSystem) -> None:
    chat.llm.default = Behaviour(text=REPLY)
    taps = Collector(chat.endpoints, (type_prefix("voice.tts_audio"),))
    await taps.start()
    ws = await audio_session(chat)
    question = np.concatenate([silence(0.3), speech("What is the capital of France?"), silence(0.8)])
    await stream(ws.send, question)

    heard = await ws.expect(
        lambda f: f.get("type") == "transcript" and f.get("speaker") == "user" and f["isFinal"], timeout=15
    )
    assert "capital of france" in heard["text"].lower()
    interims = [f for f in ws.frames if f.get("type") == "transcript" and f.get("isFinal") is False]
    assert interims and all(f["speaker"] == "user" and f["text"] for f in interims)  # live while speaking
    assert chat.llm.requests[-1]["body"]["messages"][-1]["content"] == heard["text"]
    await ws.expect("text")  # the reply streams as text too
    assert (await ws.reply())["text"] == REPLY.removeprefix("[happy] ")

    out = 0
    while (frame := await ws.expect(lambda f: f.get("type") in ("audio", "audio_end"), timeout=15))["type"] == "audio":
        out += samples(frame)
    # Everything the TTS worker synthesized reached the browser, at 48 kHz.
    synthesized = await taps.expect_n(TtsAudio, taps.count(TtsAudio), timeout=1)
    assert synthesized[-1].body.last
    tts_seconds = sum(len(e.extra[0]) // 2 for e in synthesized) / synthesized[0].body.rate
    assert abs(out / MIC_RATE - tts_seconds) < 0.01
    # ... and it is the reply spoken (Piper's durations vary a little from run to run).
    expected = sum(len(speech(s)) for s in ("Hello there!", "I am glad you came.", "What shall we talk about?"))
    assert 0.75 < out / expected < 1.25
    await ws.close()
    await taps.close()


async def test_speaking_over_the_character_stops_it_and_history_keeps_what_was_heard(chat: ChatSystem) -> None:
    chat.llm.default = Behaviour(text=LONG_REPLY)
    ws = await audio_session(chat)
    await stream(ws.send, np.concatenate([silence(0.3), speech("Tell me a long story."), silence(0.8)]))
    first = await ws.expect("audio", timeout=15)
    turn = first["turn"]
    for _ in range(10):  # about a second of the character talking
        await ws.expect("audio", timeout=5)

    await stream(ws.send, np.concatenate([speech("Wait, tell me about the moon."), silence(0.8)]))
    stop = await ws.expect("interrupt", timeout=10)
    assert stop["turn"] > turn
    after = ws.frames[ws.frames.index(stop) + 1 :]
    late = [f for f in after if f.get("type") == "audio" and f["turn"] == turn]
    assert len(late) <= 1  # silenced within one chunk
    await ws.expect(lambda f: f.get("type") == "status" and f.get("status") == "listening")

    await ws.expect(
        lambda f: (
            f.get("type") == "transcript"
            and f.get("speaker") == "user"
            and f["isFinal"]
            and "moon" in f["text"].lower()
        )
    )
    await ws.expect(lambda f: f.get("type") == "transcript" and f.get("speaker") == "assistant" and f["turn"] > turn)
    session = next(f["session_id"] for f in ws.frames if "session_id" in f)

    async def first_reply() -> dict[str, Any]:
        async with chat.http.get(f"{chat.url}/api/v1/sessions/{session}/messages") as resp:
            messages = (await resp.json())["messages"]
        return next(m for m in messages if m["speaker"] == "assistant" and m["metadata"].get("heard"))

    record = await first_reply()
    generated = record["metadata"]["generated"]
    assert record["metadata"]["interrupted"] is True
    assert record["content"] and len(record["content"]) < len(generated)  # heard less than was written
    assert generated.startswith(record["content"].rstrip(".,!?"))
    await ws.close()


async def test_a_text_session_can_ask_for_spoken_replies(chat: ChatSystem) -> None:
    chat.llm.default = Behaviour(text=REPLY)
    ws = await chat.ws()
    await ws.start(speak=True)
    await ws.say("Say hello")
    frame = await ws.expect("audio", timeout=15)
    assert samples(frame) > 0
    await ws.expect("audio_end", timeout=15)
    plain = await chat.ws()
    await plain.start()
    await plain.say("Say hello")
    await plain.reply()
    assert not [f for f in plain.frames if f.get("type") == "audio"]  # text sessions stay silent by default
    await ws.close()
    await plain.close()


async def test_bad_audio_gets_clear_errors_and_the_session_goes_on(chat: ChatSystem) -> None:
    ws = await chat.ws()
    await ws.send({"action": "start_session", "input_type": "audio", "sample_rate": 10**7})
    assert (await ws.expect("error"))["code"] == "bad_sample_rate"
    await ws.send({"action": "start_session", "input_type": "audio", "sample_rate": "fast"})
    assert (await ws.expect("error"))["code"] == "bad_sample_rate"
    await ws.start(input_type="audio", sample_rate=MIC_RATE)
    for data, code in ((audio_frame(b"\x01\x02\x03")["data"], "bad_audio"), ("!!not base64!!", "bad_audio"),
                       ("", "bad_audio"), (17, "bad_audio")):  # fmt: skip
        await ws.send({"action": "stream_data", "input_type": "audio", "data": data})
        error = await ws.expect("error")
        assert error["code"] == code and error["message"]
    flood = silence(3.0)  # three seconds at once: more than the burst allowance
    for offset in range(0, len(flood), 960):
        await ws.send(audio_frame(flood[offset : offset + 960]))
    assert (await ws.expect("error"))["code"] == "audio_flood"
    await ws.send({"action": "ping"})
    await ws.expect("pong")  # still alive
    await ws.say("are you there?")  # and text still works in an audio session
    await ws.reply(timeout=15)
    await ws.close()
