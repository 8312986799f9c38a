"""Speech for the voice tests and benchmark: questions spoken by the Piper voice, at the
browser's 48 kHz, streamed like a microphone (20 ms chunks on the real-time clock)."""

from __future__ import annotations

import asyncio
import base64
import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from actors.speech import Int16, SherpaPiperSynthesizer

MIC_RATE = 48_000


@functools.cache
def voice() -> SherpaPiperSynthesizer:
    """The user's voice: Piper through sherpa-onnx, as the tests and bench/voice.py have always
    spoken their questions (the system answers through its own engine)."""
    return SherpaPiperSynthesizer(Path(tempfile.gettempdir()) / "greenroom-test-voice")


def speech(text: str, rate: int = MIC_RATE) -> Int16:
    """``text`` spoken, resampled to ``rate``."""
    engine = voice()
    pcm = engine.synthesize(text)
    return np.asarray(soxr.resample(pcm, engine.rate, rate, quality="HQ"), dtype="<i2")


def voiced(pcm: Int16, rate: int = MIC_RATE, floor_db: float = 50.0) -> Int16:
    """``pcm`` without the silence after its last word: 10 ms frames quieter than ``floor_db``
    below the loudest are cut off the end (Piper ends a sentence with up to ~0.2 s of it),
    so its end is where the speaker stopped."""
    frame = rate // 100
    n = len(pcm) // frame
    if not n:
        return pcm
    x = pcm[: n * frame].astype(np.float32).reshape(n, frame)
    rms = np.sqrt((x * x).mean(axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-floor_db / 20))
    return pcm[: (loud[-1] + 1) * frame] if len(loud) else pcm[:0]


def silence(seconds: float, rate: int = MIC_RATE) -> Int16:
    return np.zeros(int(seconds * rate), dtype="<i2")


async def at(when: float) -> None:
    """Wait for a point on the loop's clock (a microphone produces audio in real time)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ring() -> None:
        if not fut.done():
            fut.set_result(None)

    handle = loop.call_at(when, ring)
    try:
        await fut
    finally:
        handle.cancel()


def audio_frame(pcm: Int16 | bytes) -> dict[str, Any]:
    data = pcm if isinstance(pcm, bytes) else pcm.astype("<i2").tobytes()
    return {"action": "stream_data", "input_type": "audio", "data": base64.b64encode(data).decode()}


async def stream(send: Any, pcm: Int16, chunk_ms: int = 20, rate: int = MIC_RATE) -> float:
    """Send ``pcm`` as a microphone would; returns the loop time the last chunk went out."""
    loop = asyncio.get_running_loop()
    step = rate * chunk_ms // 1000
    start = loop.time()
    for i, offset in enumerate(range(0, len(pcm), step)):
        await send(audio_frame(pcm[offset : offset + step]))
        await at(start + (i + 1) * chunk_ms / 1000)
    return loop.time()
