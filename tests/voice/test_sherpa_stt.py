"""``GREENROOM_STT_MODEL=/dir``: a sherpa-onnx recognizer model directory instead of Whisper,
run by sherpa-onnx for real (a tiny Paraformer built here, ``tests/fakes/tiny_paraformer.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actors import Actor
from actors.resampler import Resampler
from actors.speech import STT_RATE, SherpaRecognizer, SpeechError, make_recognizer
from actors.stt import SttWorker
from actors.tts import TtsWorker
from tests.chat.conftest import ChatSystem
from tests.fakes import tiny_paraformer
from tests.fakes.openai_server import Behaviour
from tests.voice.audio import MIC_RATE, silence, speech, stream


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tiny_paraformer.build(tmp_path / "tiny-paraformer")


@pytest.fixture
def more_actors(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> list[type[Actor]]:
    monkeypatch.setenv("GREENROOM_STT_MODEL", str(model_dir))
    return [SttWorker, TtsWorker, Resampler]


def test_a_model_directory_is_heard_through_sherpa_onnx(model_dir: Path) -> None:
    recognizer = make_recognizer(str(model_dir))
    assert isinstance(recognizer, SherpaRecognizer)
    said = (speech("What is the capital of France?", rate=STT_RATE) / np.float32(32768)).astype(np.float32)
    assert recognizer.transcribe(said) == "loud"  # the samples reached the model as features
    assert recognizer.transcribe(np.zeros(STT_RATE, dtype=np.float32)) == "quiet"


def test_a_directory_that_is_no_recognizer_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpeechError, match=r"GREENROOM_STT_MODEL=.*nowhere is not a directory"):
        make_recognizer(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpeechError, match=r"no tokens\.txt: not a sherpa-onnx model directory"):
        make_recognizer(str(empty))
    (empty / "tokens.txt").write_text("<blank> 0\n")
    with pytest.raises(SpeechError, match=r"expected model\.onnx, or encoder and decoder \.onnx files"):
        make_recognizer(str(empty))


async def test_a_spoken_turn_is_heard_by_the_configured_recognizer(chat: ChatSystem) -> None:
    chat.llm.default = Behaviour(text="[happy] I hear you loud and clear.")
    ws = await chat.ws()
    await ws.start(input_type="audio", sample_rate=MIC_RATE)
    await stream(ws.send, np.concatenate([silence(0.3), speech("What is the capital of France?"), silence(0.8)]))
    said = await ws.expect(lambda f: f.get("type") == "transcript" and f.get("speaker") == "user" and f["isFinal"], 15)
    assert said["text"] == "loud"  # the tiny model's word, not Whisper's
    assert (await ws.reply(timeout=15))["text"] == "I hear you loud and clear."
    assert chat.llm.requests[-1]["body"]["messages"][-1] == {"role": "user", "content": "loud"}
    await ws.close()
