"""TTS worker (seeds/003 pipeline): speaks each reply sentence as the character agent
streams it, so speech starts before the reply is complete.

Per spoken turn two tasks: a synthesizer that turns sentences into audio as they
arrive (ahead of playback), and a player that releases the audio in 100 ms chunks at
the pace it is heard, at most ``LEAD`` seconds ahead of the listener: the edge's jitter
buffer stays small, an interruption silences the character within a chunk, and we know
what the user actually heard. An interrupt cancels both and reports that (``voice.heard``)
so history records it.

Synthesis runs in worker threads on a small pool of engines (the native code releases
the GIL): one per core.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from actors.actor import Actor
from actors.dashscope_speech import CosyVoiceSynthesizer
from actors.speech import Int16, PiperSynthesizer, SpeechError, Synthesizer
from bus import Envelope
from bus.chat import ChatError, EndSession, Reply, Sentence, TurnStarted
from bus.system import Interrupt
from bus.voice import Heard, TtsAudio
from config.characters import Card, load_cards
from config.settings import settings

CHUNK_SECONDS = 0.1
LEAD = 0.3
"""Seconds of speech released ahead of the listener."""
DEFAULT_VOICE = "en_US-joe-medium"


@dataclass(eq=False)
class Utterance:
    """The spoken reply of one turn."""

    turn: int
    cause: Envelope[Any]
    voice: str
    texts: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    audio: asyncio.Queue[tuple[str, Int16, int] | None] = field(default_factory=asyncio.Queue)
    """(text, PCM16, sample rate) per synthesized sentence; None at the end."""
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, end, text) of each sentence on the turn's audio timeline, seconds."""
    released: float = 0.0
    started: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def heard(self) -> str:
        """The words the listener has heard by now."""
        if self.started is None:
            return ""
        played = min(self.released, time.monotonic() - self.started)
        words: list[str] = []
        for start, end, text in self.spans:
            if end <= played:
                words.extend(text.split())
            elif start < played:
                part = text.split()
                words.extend(part[: int(len(part) * (played - start) / (end - start))])
                break
        return " ".join(words)


class TtsWorker(Actor):
    name = "tts"
    handles = (TurnStarted, Sentence, Reply, Interrupt, EndSession)
    interrupt_cancels = False  # handlers only enqueue; interrupts stop the turn's tasks here

    async def on_start(self) -> None:
        self.cards: dict[str, Card] = load_cards()
        self._engines_n = max(1, min(2, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(max_workers=self._engines_n, thread_name_prefix="tts")
        self._engines: dict[str, asyncio.Queue[Synthesizer]] = {}
        self._utterances: dict[str, Utterance] = {}
        await self._engine_pool(DEFAULT_VOICE)  # load before saying ready: the first reply should not wait
        self.log.info("speech synthesizer ready", engines=self._engines_n)

    async def on_stop(self) -> None:
        for utt in self._utterances.values():
            for task in utt.tasks:
                task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _engine_pool(self, voice: str) -> asyncio.Queue[Synthesizer]:
        pool = self._engines.get(voice)
        if pool is None:
            cfg = settings()
            engines: list[Synthesizer]
            if voice.startswith("cosyvoice"):
                engines = [CosyVoiceSynthesizer(voice, cfg.dashscope_api_key, cfg.dashscope_ws_url)
                           for _ in range(self._engines_n)]  # fmt: skip
            else:
                loop = asyncio.get_running_loop()
                engines = [await loop.run_in_executor(self._pool, PiperSynthesizer, cfg.data_dir, voice, 2)
                           for _ in range(self._engines_n)]  # fmt: skip
            pool = asyncio.Queue()
            for engine in engines:
                pool.put_nowait(engine)
            self._engines[voice] = pool
        return pool

    async def on_message(self, env: Envelope[Any]) -> None:
        session, body = env.session, env.body
        utt = self._utterances.get(session)
        match body:
            case TurnStarted():
                if body.speak:
                    self._stop(session)
                    card = self.cards.get(body.character)
                    voice = settings().tts_voice or (card.voice if card is not None else "") or DEFAULT_VOICE
                    self._begin(session, Utterance(env.turn, env, voice))
            case Sentence():
                if utt is not None and utt.turn == env.turn:
                    utt.texts.put_nowait(body.text)
            case Reply():
                if utt is not None and utt.turn == env.turn:
                    utt.texts.put_nowait(None)
            case Interrupt():
                if utt is not None and utt.turn < env.turn:
                    heard = utt.heard() if utt.started is not None else None
                    self._stop(session)
                    if heard is not None:
                        await self.bus.publish(Heard(heard), session=session, turn=utt.turn, parent=env.id)
            case EndSession():
                self._stop(session)

    def _begin(self, session: str, utt: Utterance) -> None:
        self._utterances[session] = utt
        utt.tasks = [
            asyncio.create_task(self._synthesize(session, utt), name=f"tts-synth:{session}"),
            asyncio.create_task(self._play(session, utt), name=f"tts-play:{session}"),
        ]

    def _stop(self, session: str) -> None:
        utt = self._utterances.pop(session, None)
        if utt is not None:
            for task in utt.tasks:
                task.cancel()

    async def _synthesize(self, session: str, utt: Utterance) -> None:
        loop = asyncio.get_running_loop()
        try:
            engines = await self._engine_pool(utt.voice)
        except SpeechError as exc:
            await self.bus.publish(ChatError("voice_unavailable", str(exc)), cause=utt.cause)
            utt.audio.put_nowait(None)
            return
        while (text := await utt.texts.get()) is not None:
            engine = await engines.get()
            t0 = time.perf_counter()
            try:
                pcm = await loop.run_in_executor(self._pool, engine.synthesize, text)
                self.log.debug("synthesized", text=text[:60], ms=round((time.perf_counter() - t0) * 1000),
                               seconds=round(len(pcm) / engine.rate, 2))  # fmt: skip
            except SpeechError as exc:  # the provider refused (key, task-failed, timeout): the text goes on
                self.log.warning("synthesis failed", error=exc.args[0])
                await self.bus.publish(ChatError("tts_failed", exc.args[0]), cause=utt.cause)
                break
            except Exception as exc:  # a sentence the engine cannot say is skipped, not fatal
                self.log.warning("synthesis failed", error=str(exc), text=text[:80])
                continue
            finally:
                engines.put_nowait(engine)
            utt.audio.put_nowait((text, pcm, engine.rate))
        utt.audio.put_nowait(None)

    async def _play(self, session: str, utt: Utterance) -> None:
        seq = 0
        rate = 22050
        try:
            while (item := await utt.audio.get()) is not None:
                text, pcm, rate = item
                step = int(rate * CHUNK_SECONDS)
                utt.spans.append((utt.released, utt.released + len(pcm) / rate, text))
                for i in range(0, len(pcm), step):
                    chunk = pcm[i : i + step]
                    if utt.started is None:
                        utt.started = time.monotonic()
                    ahead = utt.released - (time.monotonic() - utt.started)
                    if ahead > LEAD:
                        await asyncio.sleep(ahead - LEAD)  # pace to the listener
                    await self.bus.publish(TtsAudio(seq, rate), cause=utt.cause, extra=(chunk.tobytes(),))
                    seq += 1
                    utt.released += len(chunk) / rate
            await self.bus.publish(TtsAudio(seq, rate, last=True), cause=utt.cause, extra=(b"",))
        finally:
            if self._utterances.get(session) is utt:
                del self._utterances[session]
