"""A spoken turn's ledger, on the real local models: every hop from the end of speech to the
first audio out, in the order the pipeline runs them."""

from __future__ import annotations

import numpy as np
import pytest

from actors import Actor
from actors.resampler import Resampler
from actors.stt import SttWorker
from actors.telemetry import TelemetrySink
from actors.tts import TtsWorker
from tests.chat.conftest import ChatSystem
from tests.fakes.openai_server import Behaviour
from tests.helpers import Collector
from tests.telemetry.test_sink import settled
from tests.voice.audio import silence, speech, stream
from tests.voice.test_voice import REPLY, audio_session


@pytest.fixture
def more_actors() -> list[type[Actor]]:
    return [TelemetrySink, SttWorker, TtsWorker, Resampler]


async def test_a_spoken_turns_ledger_runs_from_the_end_of_speech_to_the_first_audio(chat: ChatSystem) -> None:
    chat.llm.default = Behaviour(text=REPLY)
    watch = Collector(chat.endpoints, ("telemetry.metrics",))
    await watch.start()
    ws = await audio_session(chat)
    session = next(f["session_id"] for f in ws.frames if "session_id" in f)
    await stream(ws.send, np.concatenate([silence(0.3), speech("What is the capital of France?"), silence(0.8)]))
    await ws.expect("audio_end", timeout=30)
    await settled(watch, lambda b: b.histograms["ttfa_ms"]["count"] >= 1 and b.histograms["total_ms"]["count"] >= 1)
    await watch.close()
    async with chat.http.get(f"{chat.url}/api/v1/telemetry/sessions/{session}") as resp:
        detail = await resp.json()
    [turn] = detail["turns"]
    hops = turn["hops"]
    assert turn["source"] == "voice" and hops["vad_end"] == 0  # the zero is the end of speech
    chain = ["vad_end", "stt_final", "user_input", "accepted", "llm_first_token", "first_sentence",
             "tts_first_chunk", "first_audio_out"]  # fmt: skip
    assert [hops[h] for h in chain] == sorted(hops[h] for h in chain)
    assert turn["ttfa_ms"] == hops["first_audio_out"] > hops["tts_first_chunk"] > 0
    assert "first_frame_sent" in hops and "reply_end" in hops
    await ws.close()
