"""Small parts of the voice actors, without the bus."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from actors import stt
from actors.speech import collapse_repeats, prepare_piper
from actors.stt import SttWorker


def test_a_transcript_that_starts_over_is_cut_back_to_one_copy() -> None:
    assert collapse_repeats("Why is the sky blue? Why is the sky blue? Why") == "Why is the sky blue?"
    assert collapse_repeats("Stop. Stop. Stop.") == "Stop."
    assert collapse_repeats("Hello there, I am glad you came.") == "Hello there, I am glad you came."
    assert collapse_repeats("a b a") == "a b a"  # no full repetition: left alone


def test_idle_streams_are_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = SttWorker.__new__(SttWorker)  # only its stream bookkeeping, no bus
    worker._streams = {}
    clock = [0.0]
    monkeypatch.setattr(stt, "time", SimpleNamespace(monotonic=lambda: clock[0], perf_counter=time.perf_counter))
    worker._stream("a", 48_000)
    clock[0] = 10.0
    worker._stream("b", 48_000)
    clock[0] = 35.0
    worker._stream("c", 16_000)  # a has been silent 35 s: let go; b only 25 s
    assert list(worker._streams) == ["b", "c"]
    clock[0] = 36.0
    worker._stream("b", 48_000)  # used again: kept, and now the most recent
    assert list(worker._streams) == ["c", "b"]


def test_piper_is_prepared_once_with_sherpa_metadata(tmp_path: Path) -> None:
    target = prepare_piper(tmp_path, "en_US-joe-medium")
    model = target / "model.onnx"
    stamp = model.stat().st_mtime_ns
    tail = model.read_bytes()[-400:]
    assert b"model_type" in tail and b"piper" in tail and b"22050" in tail
    assert "ə" in (target / "tokens.txt").read_text()
    assert prepare_piper(tmp_path, "en_US-joe-medium") == target
    assert model.stat().st_mtime_ns == stamp  # not written again
    with pytest.raises(Exception, match="unknown Piper voice"):
        prepare_piper(tmp_path, "xx_XX-nobody")
