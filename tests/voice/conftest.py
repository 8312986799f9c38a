"""The chat stack plus the voice actors (STT, TTS, resampler) on the real local models."""

from __future__ import annotations

import pytest

from actors import Actor
from actors.resampler import Resampler
from actors.stt import SttWorker
from actors.tts import TtsWorker
from tests.chat.conftest import chat, database_url, fake_llm, llm_base_url, pg_url  # noqa: F401


@pytest.fixture
def more_actors() -> list[type[Actor]]:
    return [SttWorker, TtsWorker, Resampler]
