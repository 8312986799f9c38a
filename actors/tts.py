"""TTS worker (seeds/003 pipeline): speaks each reply sentence as the character agent
streams it, so speech starts before the reply is complete.

Per spoken turn a player releases the audio in 100 ms chunks at the pace it is heard, at
most ``LEAD`` seconds ahead of the listener: the edge's jitter buffer stays small, an
interruption silences the character within a chunk, and we know what the user actually
heard. An interrupt stops it and reports that (``voice.heard``) so history records it.

Sentences are synthesized as they arrive by one scheduler for all sessions, earliest
deadline first: of the turns with text waiting, the one whose listener runs out of audio
soonest (a turn not yet heard at all first), and none more than ``AHEAD`` seconds ahead
of its listener. Several sessions speaking at once then each get their next sentence in
time, and the model writing their replies keeps the CPU that speech far ahead would take.
A long piece whose listener would run dry before it is ready is said in two halves
(``SPLIT_MARGIN``); a turn's first piece waits for more while others share the CPU, users
who just stopped speaking counted among them (``START_SHARED``, ``COMING``).

Local synthesis (Piper) runs in worker threads, one per core (the native code releases the
GIL), on one engine per voice that they share: a Piper voice's onnxruntime session runs
several generations at once (bit-identical to one at a time), so a second engine would only
cost memory. Each generation uses one core. Alone on an idle machine a two-core generation
is faster (a 4-word piece in ~100 ms instead of ~160), but in the running system, where
the reply's text is streamed through several processes while its first words are spoken, it
stalls at its barriers whenever another process takes a core: first pieces took 341 and 385
ms (median of 14) against 239 and 232 on one core (bench/voice.py with its log, 2026-11-22).
With the model truly yielding the CPU (2026-11-23), two cores made a lone reply's first audio
~100 ms sooner (p50 461 against 558 ms) but kept 6 and 5 of 8 sessions speaking at once
up, against 8 and 7 on one. Two cores with their threads sleeping rather than spinning at the
barriers (``session.intra_op.allow_spinning`` 0), three back-to-back pairs later that day:
p50 584, 526 and 550 ms against 583, 612 and 530, and 43 of 48 sessions kept up against 46.
Cloud voices (DashScope) wait on the network, not the CPU: they run in threads of their own
and never wait for a local generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from actors.actor import Actor
from actors.dashscope_speech import CosyVoiceSynthesizer
from actors.speech import HeapTrimmer, Int16, SpeechError, Synthesizer, make_piper, tune_heap
from brain.sentences import halve
from bus import Envelope
from bus.chat import ChatError, EndSession, Reply, Sentence, TurnStarted, Words
from bus.system import Interrupt
from bus.voice import Heard, SpeechEnded, TtsAudio
from config.characters import Card, load_cards
from config.settings import settings

CHUNK_SECONDS = 0.1
LEAD = 0.3
"""Seconds of speech released ahead of the listener."""
AHEAD = 2.5
"""Seconds of speech synthesized ahead of the listener before the next sentence waits."""
START_PER_OTHER = 0.5
START_SHARED = 2.0
"""While other sessions' replies are being synthesized too, a turn starts playing once
``START_PER_OTHER`` seconds of it per other such session, up to ``START_SHARED``, are ready
(or it is all ready, or the hold has passed): its short first piece alone would run out
before its next sentence, slower to come the more sessions share the CPU, is ready. With one
other session 0.5 s is enough (bench/voice.py: 2 of 2 kept up in 5 runs of 6, 1 of 2 in the
other, first audio after 1.0-1.7 s instead of 2.2 s); with two, 1.0 s (3 of 3); with three,
1.5 s (4 of 4 in the last full run; 0 of 4 with 0.5 s); with four and more, 2.0 s: one long
generation at a time makes ~7 s of speech a second here, and eight listeners take 8, so each
needs more in hand before it starts (8 at once, 2026-11-23, with ``HOLD`` 1.6: 8, 7, 8 and 8
of 8 kept up, first audio ~0.4 s later; with 1.5 s and a 1.0 s hold: 4, 5, 6 and 3 of 8)."""
HOLD_PER_OTHER = 0.35
HOLD = 1.6
"""The longest a first piece is held: ``HOLD_PER_OTHER`` seconds per other session, up to this."""
COMING = 2.0
"""Seconds after its user stopped speaking that a session counts among those sharing the CPU
before its reply's turn has begun here: its transcript and the model's first words take
0.3-2 s when many speak at once, and the speech they start competes with a reply that started
just before. Counting only replies already begun, the first of eight that asked at once found
one other, started on its 0.7 s first piece, and ran dry for 0.5 s when the other seven took
the CPU from the model writing its next words (bench/voice.py with its log, 2026-11-24)."""
SPLIT_MARGIN = 0.5
"""A local piece is spoken in two halves when the listener would have less than this many
seconds of speech left once it is synthesized (at the cost ``WordCost`` expects): the first half
is ready in about half the time. Under load the reply's next words can come late and a long
piece then take 0.4-1.2 s to say: the closest calls of 8 sessions at once (bench/voice.py
with its log, 2026-11-24) were 8-11-word pieces started with 0.5-0.7 s of speech left."""
EARLY_MARGIN = 0.5
EARLY_WORDS = 2
"""The words of a sentence the model is still writing (at least ``EARLY_WORDS``) are said
before its end when the listener would otherwise have less than ``EARLY_MARGIN`` seconds of
speech left once they are synthesized. Under load the model writes some replies' next words
seconds late, most of all long numbers and foreign words, many tokens each: every round of 8
sessions at once that ran dry in logged runs (2026-11-24) waited 2.4-4.3 s for a sentence's
end with 0.6-1.9 s of speech in hand, and the sentence's first words already written."""
MS_PER_WORD = 35.0
"""Piper's cost per word before any is measured (one core, idle machine: ~33 ms)."""
RECENT_COSTS = 4
"""Last local syntheses whose cost per word bounds what the next piece is expected to take."""
RECOUNT = 0.1
"""Seconds between counts of the sessions sharing the CPU while a first piece is held."""
DEFAULT_VOICE = "en_US-joe-medium"
CLOUD_THREADS = 8
"""Cloud syntheses at once (each waits on its own connection)."""


def is_cloud(voice: str) -> bool:
    return voice.startswith("cosyvoice")


class WordCost:
    """What a local piece costs per word now, in ms: the highest of the moving average and the
    last ``RECENT_COSTS`` syntheses. Load comes in bursts (eight replies starting at once) that
    an average follows a few pieces late: in a logged run of 8 sessions at once (2026-11-24)
    the closest calls were 9-10-word pieces that took 92-95 ms a word while the average said
    42-44, and the last four pieces had already cost up to 67."""

    def __init__(self) -> None:
        self.average = MS_PER_WORD
        self.recent: deque[float] = deque(maxlen=RECENT_COSTS)

    def add(self, ms_per_word: float) -> None:
        self.average += (ms_per_word - self.average) / 4
        self.recent.append(ms_per_word)

    def expected(self) -> float:
        return max([self.average, *self.recent])


@dataclass(eq=False)
class Utterance:
    """The spoken reply of one turn."""

    turn: int
    cause: Envelope[Any]
    voice: str
    pending: deque[tuple[str, float]] = field(default_factory=deque)
    """Sentences waiting for synthesis, in order, with when each arrived."""
    all_text: bool = False
    """The reply is complete: no more sentences will come."""
    busy: bool = False
    """A sentence of this turn is being synthesized (one at a time: they play in order)."""
    ended: bool = False
    words_in: int = 0
    """Words of the reply received in sentences."""
    words_taken: int = 0
    """Words of the reply taken for speech: sentences, and words said before their sentence ended."""
    running: tuple[int, str] = (0, "")
    """The last ``Words``: the reply's words before them, and the words."""
    synthesized: float = 0.0
    """Seconds of speech synthesized so far."""
    grew: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when more speech is ready, or all of it."""
    audio: asyncio.Queue[tuple[str, Int16, int] | None] = field(default_factory=asyncio.Queue)
    """(text, PCM16, sample rate) per synthesized sentence; None at the end."""
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, end, text) of each sentence on the turn's audio timeline, seconds."""
    released: float = 0.0
    started: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def lead(self, now: float) -> float:
        """Seconds of synthesized speech the listener has not heard yet (0: runs dry now)."""
        return self.synthesized - (now - self.started if self.started is not None else 0.0)

    def sentence(self, text: str) -> str:
        """What is left to say of the reply's next sentence: its words said early left out."""
        words = text.split()
        first, self.words_in = self.words_in, self.words_in + len(words)
        said = min(len(words), max(0, self.words_taken - first))
        self.words_taken = max(self.words_taken, self.words_in)
        return " ".join(words[said:]) if said else text

    def unsaid(self) -> list[str]:
        """The words of the sentence still being written not yet taken for speech."""
        first, text = self.running
        if first != self.words_in:  # its sentence has come since, or it was never ours
            return []
        return text.split()[self.words_taken - first :]

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
    handles = (TurnStarted, Sentence, Words, Reply, Interrupt, EndSession, SpeechEnded)
    selective = True  # see wants()
    interrupt_cancels = False  # handlers only enqueue; interrupts stop the turn's tasks here
    _scheduler: asyncio.Task[None]

    async def on_start(self) -> None:
        tune_heap()
        self.cards: dict[str, Card] = load_cards()
        self._workers = max(1, min(2, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="tts")
        self._cloud = ThreadPoolExecutor(max_workers=CLOUD_THREADS, thread_name_prefix="tts-cloud")
        self._engines: dict[str, Synthesizer] = {}
        self._loading: dict[str, asyncio.Future[Synthesizer]] = {}
        self._utterances: dict[str, Utterance] = {}
        self._coming: dict[str, float] = {}
        """Sessions whose user stopped speaking, and when: their replies come soon (``COMING``)."""
        self._running = 0
        self._word_cost = WordCost()
        self._trimmer = HeapTrimmer()  # what generations free goes back to the system
        self._jobs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._start_scheduler()
        await self._engine(DEFAULT_VOICE)  # load before saying ready: the first reply should not wait
        self.log.info("speech synthesizer ready", engine=settings().tts_engine, workers=self._workers)

    async def on_stop(self) -> None:
        self._scheduler.cancel()
        self._trimmer.cancel()
        for task in [*self._jobs, *(t for utt in self._utterances.values() for t in utt.tasks)]:
            task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._cloud.shutdown(wait=False, cancel_futures=True)

    async def _engine(self, voice: str) -> Synthesizer:
        """The voice's engine, loaded once (sessions asking for it meanwhile wait for that load)."""
        engine = self._engines.get(voice)
        if engine is None:
            cfg = settings()
            if is_cloud(voice):  # a client per call: nothing to load
                engine = CosyVoiceSynthesizer(voice, cfg.dashscope_api_key, cfg.dashscope_ws_url)
            else:
                loading = self._loading.get(voice)
                if loading is None:
                    load = (cfg.tts_engine, cfg.data_dir, voice, 1)
                    loading = asyncio.wrap_future(self._pool.submit(make_piper, *load))
                    self._loading[voice] = loading
                try:
                    engine = await asyncio.shield(loading)
                finally:
                    if loading.done():
                        self._loading.pop(voice, None)
            self._engines[voice] = engine
        return engine

    def wants(self, env: Envelope[Any]) -> bool:
        """A turn to speak, a user who stopped speaking, or anything of a session speaking: a text
        chat's turns cost nothing here."""
        body = env.body
        return (
            (isinstance(body, TurnStarted) and body.speak)
            or isinstance(body, SpeechEnded)
            or env.session in self._utterances
        )

    async def on_message(self, env: Envelope[Any]) -> None:
        session, body = env.session, env.body
        utt = self._utterances.get(session)
        match body:
            case SpeechEnded():
                self._coming[session] = time.monotonic()
            case TurnStarted():
                self._coming.pop(session, None)
                if body.speak:
                    self._stop(session)
                    card = self.cards.get(body.character)
                    voice = settings().tts_voice or (card.voice if card is not None else "") or DEFAULT_VOICE
                    self._begin(session, Utterance(env.turn, env, voice))
            case Sentence():
                if utt is not None and utt.turn == env.turn and not utt.all_text and (text := utt.sentence(body.text)):
                    utt.pending.append((text, time.monotonic()))
                    self._wake.set()
            case Words():
                if utt is not None and utt.turn == env.turn and not utt.all_text:
                    utt.running = (body.first, body.text)
                    self._wake.set()
            case Reply():
                if utt is not None and utt.turn == env.turn:
                    utt.all_text = True
                    self._end_if_done(utt)
            case Interrupt():
                if utt is not None and utt.turn < env.turn:
                    heard = utt.heard() if utt.started is not None else None
                    self._stop(session)
                    if heard is not None:
                        await self.bus.publish(Heard(heard), session=session, turn=utt.turn, parent=env.id)
            case EndSession():
                self._coming.pop(session, None)
                self._stop(session)

    def _begin(self, session: str, utt: Utterance) -> None:
        self._utterances[session] = utt
        utt.tasks = [asyncio.create_task(self._play(session, utt), name=f"tts-play:{session}")]

    def _stop(self, session: str) -> None:
        utt = self._utterances.pop(session, None)
        if utt is not None:
            utt.pending.clear()
            for task in utt.tasks:
                task.cancel()

    def _start_scheduler(self, ended: asyncio.Task[None] | None = None) -> None:
        """Starts the scheduler, again if it ever failed: speech must not stop for good."""
        if ended is not None:
            if ended.cancelled() or ended is not self._scheduler:
                return
            self.log.error("speech scheduler failed; restarted", error=repr(ended.exception()))
        self._scheduler = asyncio.create_task(self._schedule(), name="tts-schedule")
        self._scheduler.add_done_callback(self._start_scheduler)
        self._wake.set()

    async def _schedule(self) -> None:
        """Starts syntheses while threads are free: earliest deadline first, none too far
        ahead. Local ones wait for a free local thread; cloud ones only for their turn."""
        while True:
            self._wake.clear()
            wait = math.inf
            while True:
                now = time.monotonic()
                local_free = self._running < self._workers
                due: Utterance | None = None
                due_lead = AHEAD
                for utt in self._utterances.values():
                    if local_free and not utt.busy and not utt.pending:
                        wait = min(wait, self._take_early_if_late(utt, now))
                    if utt.busy or not utt.pending or not (local_free or is_cloud(utt.voice)):
                        continue
                    lead = utt.lead(now)
                    if lead >= AHEAD:
                        wait = min(wait, lead - AHEAD)  # its turn comes as the listener catches up
                    elif lead < due_lead:
                        due, due_lead = utt, lead
                if due is None:
                    break
                due.busy = True
                text, arrived = due.pending.popleft()
                if not is_cloud(due.voice):
                    self._running += 1
                    text = self._first_half_if_late(due, text, arrived, due_lead)
                job = asyncio.create_task(self._synthesize(due, text, arrived))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), None if math.isinf(wait) else max(wait, 0.01))

    def _take_early_if_late(self, utt: Utterance, now: float) -> float:
        """Takes the words of the sentence still being written as the turn's next piece when the
        listener would run out of speech soon (``EARLY_MARGIN``); else the seconds until then
        (inf: nothing to take early)."""
        if utt.started is None or utt.all_text or is_cloud(utt.voice) or len(words := utt.unsaid()) < EARLY_WORDS:
            return math.inf
        late = utt.lead(now) - len(words) * self._word_cost.expected() / 1000 - EARLY_MARGIN
        if late > 0:
            return late
        utt.pending.append((" ".join(words), now))
        utt.words_taken += len(words)
        self.log.debug("said early", session=utt.cause.session, words=len(words), lead_ms=round(utt.lead(now) * 1000))
        return math.inf

    def _first_half_if_late(self, utt: Utterance, text: str, arrived: float, lead: float) -> str:
        """``text``, or its first half when the whole would come too late (``SPLIT_MARGIN``);
        the second half is then next in line."""
        words = len(text.split())
        if lead - words * self._word_cost.expected() / 1000 >= SPLIT_MARGIN or (halves := halve(text)) is None:
            return text
        utt.pending.appendleft((halves[1], arrived))
        return halves[0]

    async def _synthesize(self, utt: Utterance, text: str, arrived: float) -> None:
        t0 = time.monotonic()
        lead = utt.lead(t0)
        try:
            try:
                engine = await self._engine(utt.voice)
            except SpeechError as exc:
                await self._give_up(utt, ChatError("voice_unavailable", str(exc)))
                return
            try:
                pool = self._cloud if is_cloud(utt.voice) else self._pool
                pcm = await asyncio.get_running_loop().run_in_executor(pool, engine.synthesize, text)
            except SpeechError as exc:  # the provider refused (key, task-failed, timeout): the text goes on
                self.log.warning("synthesis failed", error=exc.args[0])
                await self._give_up(utt, ChatError("tts_failed", exc.args[0]))
                return
            except Exception as exc:  # a sentence the engine cannot say is skipped, not fatal
                self.log.warning("synthesis failed", error=str(exc), text=text[:80])
                return
            took = time.monotonic() - t0
            if not is_cloud(utt.voice) and (words := len(text.split())):
                self._word_cost.add(took * 1000 / words)
            self.log.debug("synthesized", session=utt.cause.session, text=text[:60], lead_ms=round(lead * 1000),
                           waited_ms=round((t0 - arrived) * 1000), ms=round(took * 1000),
                           seconds=round(len(pcm) / engine.rate, 2))  # fmt: skip
            utt.synthesized += len(pcm) / engine.rate
            utt.grew.set()
            utt.audio.put_nowait((text, pcm, engine.rate))
        finally:
            utt.busy = False
            if not is_cloud(utt.voice):
                self._running -= 1
                self._trimmer.worked()
            self._end_if_done(utt)
            self._wake.set()

    async def _give_up(self, utt: Utterance, error: ChatError) -> None:
        """The turn's voice failed: say so, and end its speech with what was already said."""
        await self.bus.publish(error, cause=utt.cause)
        utt.pending.clear()
        utt.all_text = True

    def _end_if_done(self, utt: Utterance) -> None:
        if utt.all_text and not utt.pending and not utt.busy and not utt.ended:
            utt.ended = True
            utt.grew.set()
            utt.audio.put_nowait(None)

    def _sharing(self, session: str) -> int:
        """Other sessions sharing the CPU: replies being spoken, and those about to be (``COMING``)."""
        now = time.monotonic()
        for other, ended in list(self._coming.items()):
            if now - ended >= COMING:
                del self._coming[other]
        speaking = {other for other, utt in self._utterances.items() if not utt.ended}
        return len((speaking | self._coming.keys()) - {session})

    async def _start_when_enough(self, utt: Utterance) -> None:
        """Alone, a turn starts with its first piece; sharing the CPU, with more ready the more
        sessions share it (``START_PER_OTHER``), counted again while it waits: sessions whose
        users stop speaking meanwhile raise what is enough, and the hold."""
        session = utt.cause.session
        held = time.monotonic()
        logged = False
        while not utt.ended and (others := self._sharing(session)):
            enough = min(START_SHARED, START_PER_OTHER * others)
            left = held + min(HOLD, HOLD_PER_OTHER * others) - time.monotonic()
            if utt.synthesized >= enough or left <= 0:
                return
            if not logged:
                logged = True
                self.log.debug("first piece held", session=session, others=others, ready=round(utt.synthesized, 2))
            utt.grew.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(utt.grew.wait(), min(left, RECOUNT))

    async def _play(self, session: str, utt: Utterance) -> None:
        seq = 0
        rate = 22050
        try:
            while (item := await utt.audio.get()) is not None:
                if utt.started is None:
                    await self._start_when_enough(utt)
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
