"""Resampler: the TTS provider's rate (22.05 kHz Piper, 24 kHz CosyVoice…) -> 48 kHz for
the browser, with one soxr ``ResampleStream`` per session and turn, continuous across
chunks (no clicks at chunk boundaries), flushed at the turn's end and discarded on an
interrupt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from actors.actor import Actor
from bus import Envelope
from bus.chat import EndSession
from bus.system import Interrupt
from bus.voice import AudioOut, TtsAudio

OUT_RATE = 48_000


@dataclass(slots=True)
class Stream:
    turn: int
    rate: int
    resampler: Any
    seq: int = 0


class Resampler(Actor):
    name = "resampler"
    handles = (TtsAudio, Interrupt, EndSession)
    selective = True  # see wants()
    interrupt_cancels = False

    async def on_start(self) -> None:
        self._streams: dict[str, Stream] = {}

    def wants(self, env: Envelope[Any]) -> bool:
        """Audio, or the end of a session with a stream open: interrupts of text chats cost nothing."""
        return isinstance(env.body, TtsAudio) or env.session in self._streams

    async def on_message(self, env: Envelope[Any]) -> None:
        session, body = env.session, env.body
        stream = self._streams.get(session)
        if isinstance(body, Interrupt | EndSession):
            if stream is not None and (isinstance(body, EndSession) or stream.turn < env.turn):
                del self._streams[session]  # discarded: nothing of a stale turn goes out
            return
        if stream is None or stream.turn != env.turn or stream.rate != body.rate:
            if stream is not None and stream.turn > env.turn:
                return  # a straggler of an older turn
            resampler = soxr.ResampleStream(body.rate, OUT_RATE, 1, dtype="int16", quality="HQ")
            stream = self._streams[session] = Stream(env.turn, body.rate, resampler)
        pcm = np.frombuffer(env.extra[0], dtype="<i2") if env.extra else np.zeros(0, dtype="<i2")
        out = stream.resampler.resample_chunk(pcm, last=body.last)
        if len(out) or body.last:
            await self.bus.publish(AudioOut(stream.seq, body.last), cause=env, extra=(out.astype("<i2").tobytes(),))
            stream.seq += 1
        if body.last:
            del self._streams[session]
