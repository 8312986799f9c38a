"""STT worker: per-session stream of the user's microphone -> speech events and transcripts.

For each session: resample to 16 kHz (soxr, continuous across chunks), VAD (silero, one
model in onnxruntime for every session, or sherpa-onnx's per session), and a recognizer.
Publishes ``voice.speech_start`` as soon as the VAD hears speech (the barge-in trigger),
interim transcripts about once a second while the user speaks, then ``voice.speech_end``,
the final ``voice.transcript`` and a ``chat.user_text`` that the session manager persists
and turns into a user turn.

Recognition runs in two worker threads (the native code releases the GIL; the Whisper
model serves two at once), so the actor's loop keeps taking audio while transcripts are
computed and two sessions' utterances do not queue behind each other. An interim
transcript is not started while other sessions' transcripts fill the threads: when many
sessions speak at once, their final transcripts, which start replies, do not wait behind
interims.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

from actors.actor import Actor
from actors.speech import (
    STT_RATE,
    Float32,
    HeapTrimmer,
    Recognizer,
    SpeechError,
    VadSettings,
    make_recognizer,
    make_vad,
    pcm16_to_float,
    tune_heap,
)
from bus import Envelope
from bus.chat import ChatError, EndSession, UserText
from bus.voice import AudioIn, SpeechEnded, SpeechStarted, Transcript
from config.settings import settings

WORKERS = 2
INTERIM_EVERY = 1.0  # seconds of speech between interim transcripts
EARLY_AFTER = 0.1
"""Seconds of quiet inside an utterance after which its transcript is started early: by the
time the end-of-utterance wait (0.25 s) is over, the words are known (Whisper takes 0.1-0.17 s
here; started at 0.15 s, the final transcript came ~65 ms after the end at p50, at 0.1 s
~15 ms: back-to-back bench runs of 12 turns). A transcript started at a shorter pause is
dropped when the speech goes on."""
EARLY_AFTER_SHARED = 0.15
"""``EARLY_AFTER`` while other sessions' transcripts fill the recognition threads."""
QUIET = 0.1
"""Quiet is below this fraction of the speech's loudness: low enough that the soft end of a
word ("France") still counts as speech (at 0.25, 1 in 12 came out as "friends"), and below
``QUIET_FLOOR``, background noise under which is quiet; for a soft speaker, below 0.2 of their
loudness, as 0.01 is for a usual one (0.05): with 0.3, "Who built the first computer?" 26 dB
down came out as "who built the first." and "Peter."."""
QUIET_FLOOR = 0.01
END_QUIET = VadSettings().min_silence
"""An utterance ends after this long of quiet, or when the VAD says so if that comes first.
Silero keeps hearing speech ~0.1-0.15 s into the soft end of the last word before its own
0.25 s wait starts, so alone it ended a turn 0.3-0.4 s after the last word (the bench's
questions: 0.18-0.37 s after the clip, by loudness 0.03-0.24 s). Where noise never falls
below quiet, the VAD ends utterances as before."""
PRE_ROLL = 0.3  # seconds kept before the VAD's speech start for interims
IDLE_SECONDS = 30.0
"""A session's stream (its VAD's audio, and with sherpa-onnx's VAD ~7 MB of model) is let go
after this long without audio; a microphone that is on sends audio all the time, silence
included."""


@dataclass(slots=True)
class Stream:
    rate: int
    resampler: Any
    vad: Any
    expected_seq: int = 0
    heard: int = 0
    """16 kHz samples fed so far."""
    speaking: bool = False
    speech: list[Float32] = field(default_factory=list)
    """Audio since speech started (with pre-roll), for interims."""
    recent: deque[Float32] = field(default_factory=lambda: deque(maxlen=16))
    since_interim: int = 0
    interim: asyncio.Task[None] | None = None
    level: float = 0.0
    """Running loudness of the speech (RMS)."""
    quiet: int = 0
    """16 kHz samples of quiet since the speech was last loud."""
    running: int = 0
    """This session's recognitions submitted and not done."""
    early: asyncio.Future[str] | None = None
    """Transcript started at the first pause; used if the utterance ends there."""
    last_audio: float = 0.0


class SttWorker(Actor):
    name = "stt"
    handles = (AudioIn, EndSession)
    interrupt_cancels = False  # interrupts are about replies, never about what the user says
    accept_stale = True

    async def on_start(self) -> None:
        tune_heap()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="stt")
        self._running = 0  # recognitions submitted and not done
        self._trimmer = HeapTrimmer()  # what recognitions free goes back to the system
        loop = asyncio.get_running_loop()
        cfg = settings()
        self._vad_engine = cfg.vad_engine
        self.recognizer: Recognizer = await loop.run_in_executor(
            self._pool, make_recognizer, cfg.stt_model, cfg.dashscope_api_key, cfg.dashscope_ws_url
        )
        # A first detector now: its model is loaded, and the engine known, before anyone speaks.
        await loop.run_in_executor(self._pool, make_vad, VadSettings(), self._vad_engine)
        self._streams: dict[str, Stream] = {}
        self.log.info("speech recognizer ready", recognizer=type(self.recognizer).__name__)

    async def on_stop(self) -> None:
        for stream in self._streams.values():
            if stream.interim is not None:
                stream.interim.cancel()
        self._trimmer.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def on_message(self, env: Envelope[Any]) -> None:
        body = env.body
        if isinstance(body, EndSession):
            self._drop(env.session)
            return
        await self._audio(env, body)

    def _drop(self, session: str) -> None:
        stream = self._streams.pop(session, None)
        if stream is not None and stream.interim is not None:
            stream.interim.cancel()

    def _stream(self, session: str, rate: int) -> Stream:
        now = time.monotonic()
        stream = self._streams.pop(session, None)  # re-inserted last: the dict is ordered by use
        if stream is None or stream.rate != rate:
            if stream is not None:
                self._streams[session] = stream
                self._drop(session)
            while self._streams:  # streams of sessions that went quiet, oldest first
                oldest = next(iter(self._streams))
                if now - self._streams[oldest].last_audio < IDLE_SECONDS:
                    break
                self._drop(oldest)
            resampler = (
                soxr.ResampleStream(rate, STT_RATE, 1, dtype="float32", quality="HQ") if rate != STT_RATE else None
            )
            stream = Stream(rate, resampler, make_vad(engine=self._vad_engine))
        stream.last_audio = now
        self._streams[session] = stream
        return stream

    async def _audio(self, env: Envelope[Any], body: AudioIn) -> None:
        if not env.extra or len(env.extra[0]) % 2:
            await self.bus.publish(ChatError("bad_audio", "audio chunk without PCM16 samples"), cause=env)
            return
        stream = self._stream(env.session, body.rate)
        if body.seq != stream.expected_seq and stream.expected_seq:
            self.log.warning("audio chunks lost", expected=stream.expected_seq, got=body.seq, session=env.session)
        stream.expected_seq = body.seq + 1
        x = pcm16_to_float(env.extra[0])
        if stream.resampler is not None:
            x = stream.resampler.resample_chunk(x)
        if not len(x):
            return
        stream.vad.accept_waveform(x)
        stream.heard += len(x)
        if not stream.speaking:
            stream.recent.append(x)
        if stream.vad.is_speech_detected() and not stream.speaking:
            stream.speaking = True
            pre = np.concatenate(list(stream.recent)) if stream.recent else x
            stream.speech = [pre[-int(PRE_ROLL * STT_RATE) - len(x) :]]
            stream.since_interim = 0
            await self.bus.publish(SpeechStarted(stream.heard / STT_RATE * 1000), session=env.session, parent=env.id)
        elif stream.speaking:
            stream.speech.append(x)
            stream.since_interim += len(x)
            self._early(stream, x)
            if stream.quiet >= END_QUIET * STT_RATE:
                stream.vad.reset()  # its end of this utterance would only come later
                await self._end(env, stream, np.concatenate(stream.speech))
                return
            due = stream.since_interim >= INTERIM_EVERY * STT_RATE
            others = self._running - stream.running  # other sessions' transcripts come first
            if due and stream.interim is None and stream.early is None and others < WORKERS:
                stream.since_interim = 0
                stream.interim = asyncio.create_task(self._interim(env, stream, np.concatenate(stream.speech)))
        while not stream.vad.empty():
            segment = np.asarray(stream.vad.front.samples, dtype=np.float32)
            stream.vad.pop()
            await self._end(env, stream, segment)

    async def _end(self, env: Envelope[Any], stream: Stream, segment: Float32) -> None:
        """The utterance is over: its final transcript (the early one, if the words are the same)."""
        early, stream.early = stream.early, None
        stream.speaking = False
        stream.speech = []
        stream.recent.clear()
        stream.level = 0.0
        stream.quiet = 0
        if stream.interim is not None:
            stream.interim.cancel()
            stream.interim = None
        await self._final(env, stream, segment, early)

    def _early(self, stream: Stream, x: Float32) -> None:
        rms = float(np.sqrt(np.mean(x * x)))
        floor = min(QUIET_FLOOR, 0.2 * stream.level)  # a soft speaker's words are not quiet
        if not stream.level or rms > max(floor, QUIET * stream.level):
            stream.level = rms if not stream.level else 0.9 * stream.level + 0.1 * rms
            stream.quiet = 0
            stream.early = None  # speech went on: a transcript started at the pause is stale
            return
        stream.quiet += len(x)
        # While other sessions' transcripts fill the threads, one started at a short pause would
        # more often be wasted, and delay theirs: wait for a longer one.
        early_after = EARLY_AFTER if self._running - stream.running < WORKERS else EARLY_AFTER_SHARED
        if stream.quiet >= early_after * STT_RATE and stream.early is None:
            stream.early = self._recognize(stream, np.concatenate(stream.speech))

    def _recognize(self, stream: Stream, audio: Float32) -> asyncio.Future[str]:
        """The transcript of ``audio``, computed on a worker thread. Counted until the thread
        is done with it, even when whoever awaits it is cancelled first."""
        loop = asyncio.get_running_loop()
        self._running += 1
        stream.running += 1
        work = self._pool.submit(self.recognizer.transcribe, audio)
        work.add_done_callback(lambda _: self._recognized(loop, stream))
        return asyncio.wrap_future(work, loop=loop)

    def _recognized(self, loop: asyncio.AbstractEventLoop, stream: Stream) -> None:
        """(worker thread) One recognition less, counted on the loop."""

        def done() -> None:
            self._running -= 1
            stream.running -= 1
            self._trimmer.worked()

        with contextlib.suppress(RuntimeError):  # the loop is closed: the actor has stopped
            loop.call_soon_threadsafe(done)

    async def _interim(self, env: Envelope[Any], stream: Stream, audio: Float32) -> None:
        try:
            try:
                text = await self._recognize(stream, audio)
            except SpeechError:
                return  # the final transcript reports it
            if text and stream.speaking:
                await self.bus.publish(Transcript(text, False), session=env.session, parent=env.id)
        finally:
            if stream.interim is asyncio.current_task():
                stream.interim = None

    async def _final(
        self, env: Envelope[Any], stream: Stream, segment: Float32, early: asyncio.Future[str] | None
    ) -> None:
        session = env.session
        await self.bus.publish(SpeechEnded(len(segment) / STT_RATE * 1000), session=session, parent=env.id)
        t0 = time.perf_counter()
        try:
            if early is not None:
                text = await early
            else:
                text = await self._recognize(stream, segment)
        except SpeechError as exc:  # a cloud recognizer failed: say so; typing still works
            self.log.warning("recognition failed", error=exc.args[0], session=session)
            await self.bus.publish(ChatError("stt_failed", exc.args[0]), session=session, parent=env.id)
            return
        self.log.info("utterance", session=session, seconds=round(len(segment) / STT_RATE, 2), early=early is not None,
                      stt_ms=round((time.perf_counter() - t0) * 1000), text=text)  # fmt: skip
        final = await self.bus.publish(Transcript(text, True), session=session, parent=env.id)
        if text:
            await self.bus.publish(UserText(text, "voice"), session=session, parent=final.id)
