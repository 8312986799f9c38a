"""Small parts of the voice actors, without the bus."""

from __future__ import annotations

import asyncio
import functools
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import soxr

from actors import speech as speech_engines
from actors import stt, tts
from actors.speech import (
    MAX_PHONEMES,
    STT_RATE,
    HeapTrimmer,
    Int16,
    PiperSynthesizer,
    SileroModel,
    SpeechError,
    VadSettings,
    WhisperRecognizer,
    collapse_repeats,
    make_piper,
    make_vad,
    prepare_piper,
    split_phonemes,
    trim_heap,
)
from actors.stt import SttWorker
from actors.tts import TtsWorker, Utterance
from bus.chat import Sentence, Words
from bus.voice import AudioIn, SpeechEnded, Transcript, TtsAudio
from tests.voice.audio import MIC_RATE, silence, speech, voiced


def test_a_transcript_that_starts_over_is_cut_back_to_one_copy() -> None:
    assert collapse_repeats("Why is the sky blue? Why is the sky blue? Why") == "Why is the sky blue?"
    assert collapse_repeats("Stop. Stop. Stop.") == "Stop."
    assert collapse_repeats("Hello there, I am glad you came.") == "Hello there, I am glad you came."
    assert collapse_repeats("a b a") == "a b a"  # no full repetition: left alone


def test_idle_streams_are_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = SttWorker.__new__(SttWorker)  # only its stream bookkeeping, no bus
    worker._streams = {}
    worker._vad_engine = "onnxruntime"
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


@pytest.mark.parametrize("engine_name", ["onnxruntime", "sherpa-onnx"])
def test_one_piper_engine_serves_several_threads_at_once(engine_name: str) -> None:
    """The TTS worker shares one engine per voice between its threads (no lock around the
    generation): concurrent generations must give exactly what one at a time gives."""
    engine = make_piper(engine_name, Path(tempfile.gettempdir()) / "greenroom-test-voice", tts.DEFAULT_VOICE, 2, False)
    texts = ["The capital of France is Paris, a city of lights.", "Hello there!", "Gravity pulls us down, my dear.",
             "Why did the robot cross the road? To get to the other side."]  # fmt: skip
    alone = {text: engine.synthesize(text) for text in texts}
    assert all(np.array_equal(engine.synthesize(t), alone[t]) for t in texts)  # without noise: deterministic
    assert all(len(pcm) > engine.rate // 4 for pcm in alone.values())
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(engine.synthesize, texts * 3))
    assert all(np.array_equal(pcm, alone[text]) for pcm, text in zip(together, texts * 3, strict=True))


@functools.cache
def onnx_voice() -> PiperSynthesizer:
    return PiperSynthesizer(tts.DEFAULT_VOICE, threads=2, noise=False)


def test_piper_in_onnxruntime_gets_pipers_phoneme_ids() -> None:
    engine = onnx_voice()
    ids = engine._ids
    assert engine.phoneme_ids(["h", "ə", "?"]) == [*ids["^"], *ids["_"], *ids["h"], *ids["_"], *ids["ə"], *ids["_"],
                                                    *ids["?"], *ids["_"], *ids["$"]]  # fmt: skip
    unknown = "\ufffe"  # left out
    assert engine.phoneme_ids(["h", unknown]) == [*ids["^"], *ids["_"], *ids["h"], *ids["_"], *ids["$"]]
    assert len(engine.synthesize("")) == 0 and len(engine.synthesize("   ")) == 0


def test_piper_in_onnxruntime_speaks_words_whisper_hears_and_pauses_at_a_comma() -> None:
    engine, whisper = onnx_voice(), WhisperRecognizer()
    sentences = ["Paris is the capital of France.", "Why is the sky blue?", "I would love to cook dinner tonight."]
    for text in sentences:
        pcm = engine.synthesize(text)
        heard = whisper.transcribe(soxr.resample(pcm, engine.rate, STT_RATE).astype(np.float32) / 32768)
        assert heard.lower().strip(" .?") == text.lower().strip(" .?"), heard

    def longest_pause(pcm: Int16) -> float:
        frame = engine.rate // 100
        x = pcm[: len(pcm) // frame * frame].astype(np.float32).reshape(-1, frame)
        quiet = np.sqrt((x * x).mean(axis=1)) < 0.02 * 32768 * 0.05
        inner = quiet[np.argmax(~quiet) : len(quiet) - np.argmax(~quiet[::-1])]  # between the first and last sound
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], inner.astype(int), [0]]))))[::2]
        return float(runs.max()) / 100 if len(runs) else 0.0

    # Piper pauses where the comma is (sherpa-onnx's engine does not: the reason for this one)
    assert longest_pause(engine.synthesize("Well, yes.")) >= 0.1
    assert longest_pause(engine.synthesize("Well yes.")) < 0.1


def test_a_long_sentence_is_cut_at_its_commas_else_between_words_into_even_pieces() -> None:
    def phonemes(text: str) -> list[str]:
        return list(text)

    short = phonemes("hˈɛloʊ, jˈɛs.")
    assert split_phonemes(short) == [short]
    # After the last comma that fits; the space after it is not carried over.
    assert split_phonemes(phonemes("aaa bbb, ccc ddd, eee fff."), most=18) == [
        phonemes("aaa bbb, ccc ddd,"), phonemes("eee fff.")
    ]  # fmt: skip
    # A clause too long alone: between words, in even pieces rather than a full one and a scrap.
    assert split_phonemes(phonemes("aa bb cc dd ee ff."), most=12) == [phonemes("aa bb cc"), phonemes("dd ee ff.")]
    assert split_phonemes(phonemes("abcdefghij"), most=4) == [phonemes("abcd"), phonemes("efgh"), phonemes("ij")]
    # A real sentence: every piece fits, and nothing is lost but the spaces between pieces.
    import piper_phonemize

    text = "The capital of France is Paris, a city of light and long boulevards that runs along the river, and many"
    sentence = piper_phonemize.phonemize_espeak(text + " people love it.", "en-us")[0]
    pieces = split_phonemes(sentence)
    assert len(pieces) > 2 and all(0 < len(p) <= MAX_PHONEMES for p in pieces)
    assert [x for p in pieces for x in p if x != " "] == [x for x in sentence if x != " "]
    assert pieces[0][-1] == ","


def test_a_long_sentence_is_spoken_whole_in_pieces_the_model_takes_one_at_a_time() -> None:
    engine, whisper = onnx_voice(), WhisperRecognizer()
    lengths: list[int] = []
    session = engine._session

    class Counting:
        def run(self, names: Any, feed: dict[str, Any], options: Any) -> Any:
            lengths.append(int(feed["input"].shape[1]))
            return session.run(names, feed, options)

    engine._session = cast(Any, Counting())
    text = "The old lighthouse keeper walked along the rocky shore every single morning, and he counted the boats."
    pcm = engine.synthesize(text)
    assert len(lengths) >= 2 and max(lengths) <= 2 * MAX_PHONEMES + 3  # a pad after each phoneme, BOS, EOS
    heard = whisper.transcribe(soxr.resample(pcm, engine.rate, STT_RATE).astype(np.float32) / 32768)

    def words(said: str) -> list[str]:
        return [w.strip(",.").lower() for w in said.split()]

    assert words(heard) == words(text), heard


def rss_mb() -> float:
    """This process's resident memory."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024


def test_trimming_gives_the_heaps_free_memory_back() -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    trim_heap()
    before = rss_mb()
    blocks = [libc.malloc(2000) for _ in range(40_000)]  # 80 MB in chunks glibc keeps when freed
    for b in blocks:
        ctypes.memset(b, 1, 2000)
    guard = libc.malloc(2000)  # above them: free() alone cannot shrink the heap past it
    for b in blocks:
        libc.free(b)
    held = rss_mb()
    assert held - before > 60
    assert trim_heap()
    assert held - rss_mb() > 60
    libc.free(guard)


HEAP_PROBE = """
import sys
import numpy as np
from actors.speech import tune_heap
def rss():
    status = open("/proc/self/status").read().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmRSS"))) / 1024
if sys.argv[1] == "tuned":
    assert tune_heap()
a = np.ones(8 << 17)  # 8 MB: glibc maps it apart and, once it is freed, keeps blocks this large on the heap
del a
before = rss()
b = np.ones(8 << 17)
pins = [np.ones(1000) for _ in range(100)]  # small blocks after it
del b
print(rss() - before)
"""


@pytest.mark.parametrize(("mode", "kept"), [("default", (6, 9)), ("tuned", (-1, 1))])
def test_a_tuned_heap_gives_a_large_freed_block_back_at_once(mode: str, kept: tuple[float, float]) -> None:
    """tune_heap(): a working buffer of a few MB (Piper's, onnxruntime's) goes back to the system
    when it is freed, instead of staying on the heap until the next trim."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, check=True).stdout
    assert kept[0] < float(out) < kept[1]


WHISPER_PROBE = """
import os
import sys
import numpy as np
if sys.argv[1] != "-":
    os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = sys.argv[1]
from actors.speech import WhisperRecognizer, trim_heap
def rss():
    status = open("/proc/self/status").read().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmRSS"))) / 1024
recognizer = WhisperRecognizer()
noise = (np.random.default_rng(1).standard_normal(16000 * 4) * 0.05).astype(np.float32)
seen = []
for n in np.random.default_rng(2).permutation(46):  # lengths of their own, as people speak them
    recognizer.transcribe(noise[: 8000 + 1000 * n])
    trim_heap()
    seen.append(rss())
print(np.median(seen[-10:]) - np.median(seen[5:15]))  # it moves by up to ~10 MB from one to the next
"""


@pytest.mark.parametrize(("capacity", "grown"), [("-", (-20, 20)), ("1024", (30, 200))])
def test_whisper_does_not_grow_with_every_utterance_of_a_new_length(capacity: str, grown: tuple[float, float]) -> None:
    """oneDNN's kernel cache (inside CTranslate2) kept a compiled kernel for every input shape:
    the recognizer turns it off unless it is set ("1024" is oneDNN's own default). Over 46
    utterances of 0.5-3.3 s the median RSS of the last 10 against utterances 5-14: as shipped
    -1 to +11 MB (5 runs), with "1024" +52 to +54 MB (3 runs). 26 utterances and means (until
    2026-11-23) left them 8 MB apart at worst, and the shipped one sometimes over its limit."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", WHISPER_PROBE, capacity], capture_output=True, text=True, check=True)
    assert grown[0] < float(out.stdout) < grown[1], out.stderr


def test_short_pieces_share_the_phoneme_budget_and_a_long_one_waits_for_all_of_it() -> None:
    from actors.speech import PhonemeBudget

    budget = PhonemeBudget(60)
    inside: list[str] = []
    entered = threading.Semaphore(0)
    release = threading.Event()

    def run(name: str, phonemes: int) -> None:
        with budget.spend(phonemes):
            inside.append(name)
            entered.release()
            release.wait(5)

    first, second = (threading.Thread(target=run, args=(n, 20)) for n in ("first", "second"))
    long_one = threading.Thread(target=run, args=("long", 90))  # more than all of it: waits for all
    first.start()
    second.start()
    assert entered.acquire(timeout=5) and entered.acquire(timeout=5)  # side by side
    assert sorted(inside) == ["first", "second"] and budget.free == 20
    long_one.start()
    assert not entered.acquire(timeout=0.2)  # 60 needed, 20 free: it waits
    release.set()
    assert entered.acquire(timeout=5)
    for t in (first, second, long_one):
        t.join(5)
    assert inside[-1] == "long" and budget.free == 60


def counted_trims(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    trims: list[float] = []

    def trim() -> bool:
        trims.append(time.monotonic())
        return True

    monkeypatch.setattr(speech_engines, "trim_heap", trim)
    return trims


async def test_the_speech_workers_trim_once_their_threads_have_gone_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    trims = counted_trims(monkeypatch)
    monkeypatch.setattr(speech_engines, "TRIM_AFTER", 0.2)
    monkeypatch.setattr(speech_engines, "TRIM_EVERY", 100.0)
    worker, _ = await tts_worker(monkeypatch, FakeVoice(0.5))
    try:
        for turn in (1, 2):  # two pieces of work in quick succession: one trim, after the last
            utt = Utterance(turn, CAUSE, tts.DEFAULT_VOICE, all_text=True)
            worker._running += 1  # as the scheduler counts a local generation it starts
            await worker._synthesize(utt, "Hello.", time.monotonic())
        done = time.monotonic()

        def due() -> bool:
            return worker._trimmer._timer is not None

        assert not trims and due()
        await until(lambda: len(trims) == 1)
        assert trims[0] - done >= 0.15
        assert not due()  # nothing more is due until more work is done
    finally:
        await worker.on_stop()
    recognizer = HeldRecognizer()
    recognizer.go.set()
    listener, _ = stt_worker(recognizer)
    try:
        assert await listener._recognize(listener._stream("s", 16_000), np.zeros(16, dtype=np.float32)) == "words"
        await until(lambda: len(trims) == 2)
    finally:
        listener._pool.shutdown(wait=True)


async def test_while_speech_work_goes_on_the_heap_is_trimmed_at_most_every_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims = counted_trims(monkeypatch)
    clock = [0.0]
    monkeypatch.setattr(speech_engines, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    trimmer = HeapTrimmer(after=100.0, every=1.0)
    for _ in range(10):  # a piece of work done every half second, for 5 s
        clock[0] += 0.5
        trimmer.worked()
    await until(lambda: len(trims) == 5)
    assert trimmer.trims == 5  # at 1.0, 2.0, ... 5.0 s; the one after the last is still to come

    def pending() -> bool:
        return trimmer._timer is not None

    assert not pending()  # the last piece of work was trimmed at once
    clock[0] += 0.5
    trimmer.worked()
    assert pending()
    trimmer.cancel()


@pytest.mark.parametrize("chunk", [(320,), (333, 334, 333), (4000,)])
@pytest.mark.parametrize("settings", [VadSettings(), VadSettings(max_speech=1.0)], ids=["default", "max-speech-1s"])
def test_the_shared_model_vad_decides_as_sherpa_onnxs_does(chunk: tuple[int, ...], settings: VadSettings) -> None:
    """Same audio, same speech starts and ends after every chunk, same segments, sample for
    sample: loud questions with a short pause inside, a very soft one, noise throughout."""
    rng = np.random.default_rng(1)
    parts = [silence(0.5, STT_RATE), speech("Who built the first computer?", STT_RATE), silence(0.15, STT_RATE),
             speech("And where, exactly?", STT_RATE), silence(0.8, STT_RATE),
             (speech("Tell me more about black holes.", STT_RATE) * 0.05).astype("<i2"), silence(1.0, STT_RATE),
             speech("Okay.", STT_RATE), silence(0.6, STT_RATE)]  # fmt: skip
    audio = np.concatenate(parts).astype(np.float32) / 32768 + rng.normal(0, 0.002, sum(map(len, parts)))
    audio = audio.astype(np.float32)

    def listen(engine: str) -> tuple[list[bool], list[tuple[int, Any]]]:
        vad = make_vad(settings, engine)
        speaking, segments, at, k = [], [], 0, 0
        while at < len(audio):
            n = chunk[k % len(chunk)]
            vad.accept_waveform(audio[at : at + n])
            at, k = at + n, k + 1
            speaking.append(vad.is_speech_detected())
            while not vad.empty():
                segments.append((vad.front.start, np.asarray(vad.front.samples, dtype=np.float32)))
                vad.pop()
        return speaking, segments

    ours, theirs = listen("onnxruntime"), listen("sherpa-onnx")
    assert ours[0] == theirs[0] and any(ours[0])
    assert [(s, len(x)) for s, x in ours[1]] == [(s, len(x)) for s, x in theirs[1]] and len(ours[1]) >= 2
    assert all(np.allclose(x, y) for (_, x), (_, y) in zip(ours[1], theirs[1], strict=True))
    vad = make_vad(settings)
    vad.accept_waveform(audio[: len(audio) // 2])
    vad.reset()  # a reset detector is a fresh one
    fresh = make_vad(settings)
    for x in (audio[:16_000], audio[16_000:40_000]):
        vad.accept_waveform(x)
        fresh.accept_waveform(x)
        assert vad.is_speech_detected() == fresh.is_speech_detected()


def test_every_sessions_vad_shares_one_model() -> None:
    first = make_vad()
    before = rss_mb()
    more = [make_vad() for _ in range(30)]  # sherpa-onnx's: ~7 MB each
    for vad in [first, *more]:
        vad.accept_waveform(np.zeros(1600, dtype=np.float32))
    assert rss_mb() - before < 15
    assert {id(vad._model) for vad in [first, *more]} == {id(SileroModel.shared())}


def test_an_unknown_voice_or_engine_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpeechError, match="unknown VAD engine 'webrtc'; known: onnxruntime, sherpa-onnx"):
        make_vad(engine="webrtc")
    with pytest.raises(SpeechError, match=r"unknown Piper voice 'xx_XX-nobody'.*known: en_US-joe-medium"):
        make_piper("onnxruntime", tmp_path, "xx_XX-nobody")
    with pytest.raises(SpeechError, match="unknown TTS engine 'espeak'; known: onnxruntime, sherpa-onnx"):
        make_piper("espeak", tmp_path, tts.DEFAULT_VOICE)


class FakeVoice:
    """Speech of a fixed length, instantly; records when each sentence was asked for."""

    rate = 1000

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.asked: list[tuple[float, str]] = []

    def synthesize(self, text: str) -> Int16:
        self.asked.append((time.monotonic(), text))
        return np.zeros(int(self.rate * self.seconds), dtype="<i2")


class Published:
    def __init__(self) -> None:
        self.out: asyncio.Queue[tuple[Any, dict[str, Any]]] = asyncio.Queue()

    async def publish(self, body: Any, **kw: Any) -> Any:
        self.out.put_nowait((body, {**kw, "at": time.monotonic()}))
        return SimpleNamespace(id="e")


CAUSE = cast(Any, SimpleNamespace(session="s"))


async def tts_worker(monkeypatch: pytest.MonkeyPatch, engine: FakeVoice) -> tuple[TtsWorker, Published]:
    monkeypatch.setattr(tts, "make_piper", lambda *args: engine)
    published = Published()
    worker = TtsWorker(cast(Any, published))
    await worker.on_start()
    return worker, published


async def test_the_listener_about_to_run_dry_is_served_first(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeVoice(0.5)
    worker, _ = await tts_worker(monkeypatch, engine)
    worker._workers = 1  # one thread: the order is the scheduler's choice
    try:
        far = Utterance(1, CAUSE, tts.DEFAULT_VOICE, synthesized=2.0, started=time.monotonic())
        new = Utterance(1, CAUSE, tts.DEFAULT_VOICE)
        worker._utterances.update({"far": far, "new": new})
        far.pending.extend([("far one", 0.0), ("far two", 0.0)])
        new.pending.extend([("new one", 0.0), ("new two", 0.0)])
        worker._wake.set()
        for queue in (new.audio, new.audio, far.audio, far.audio):
            await asyncio.wait_for(queue.get(), 5)
        # 'new' has nothing to play: both its sentences go before 'far' (2 s of speech left) gets its next
        assert [text for _, text in engine.asked][:2] == ["new one", "new two"]
    finally:
        await worker.on_stop()


class HeldVoice(FakeVoice):
    """Holds its thread until let go, like a local model on the CPU; counts how many
    generations run at once."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.began = threading.Event()
        self.go = threading.Event()
        self._lock = threading.Lock()
        self._now = self.most = 0

    def synthesize(self, text: str) -> Int16:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
        self.began.set()
        self.go.wait(5)
        with self._lock:
            self._now -= 1
        return super().synthesize(text)


async def test_a_cloud_voice_does_not_wait_for_the_local_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    local = HeldVoice(0.5)
    worker, _ = await tts_worker(monkeypatch, local)
    cloud = FakeVoice(0.5)
    worker._engines["cosyvoice-v2:longxiaochun"] = cast(Any, cloud)
    worker._workers = 1  # one local thread, taken by the first local sentence
    try:
        mine = Utterance(1, CAUSE, tts.DEFAULT_VOICE)
        other = Utterance(1, CAUSE, tts.DEFAULT_VOICE)
        remote = Utterance(1, CAUSE, "cosyvoice-v2:longxiaochun")
        worker._utterances.update({"mine": mine, "other": other, "remote": remote})
        mine.pending.append(("local one", 0.0))
        other.pending.append(("local two", 0.0))
        worker._wake.set()
        assert await asyncio.to_thread(local.began.wait, 5)  # "local one" holds the only local thread
        remote.pending.append(("from the cloud", 0.0))
        worker._wake.set()
        await asyncio.wait_for(remote.audio.get(), 5)
        assert [t for _, t in local.asked] == [] and [t for _, t in cloud.asked] == ["from the cloud"]
        local.go.set()
        await asyncio.wait_for(mine.audio.get(), 5)
        await asyncio.wait_for(other.audio.get(), 5)
        assert len(local.asked) == 2 and local.most == 1, "one local generation at a time"
    finally:
        local.go.set()
        await worker.on_stop()


async def test_speech_is_synthesized_at_most_ahead_seconds_before_it_is_heard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts, "AHEAD", 0.5)
    engine = FakeVoice(0.2)
    worker, published = await tts_worker(monkeypatch, engine)
    try:
        utt = Utterance(1, CAUSE, tts.DEFAULT_VOICE)
        worker._begin("s", utt)
        utt.pending.extend((f"sentence {i}", 0.0) for i in range(8))
        utt.all_text = True
        worker._wake.set()
        chunks = []
        while True:
            body, _ = await asyncio.wait_for(published.out.get(), 10)
            chunks.append(body)
            if body.last:
                break
        assert utt.started is not None
        assert [text for _, text in engine.asked] == [f"sentence {i}" for i in range(8)]  # all of it, in order
        assert all(isinstance(c, TtsAudio) for c in chunks) and len(chunks) == 8 * 2 + 1  # 100 ms chunks, the end
        leads = [0.2 * k - max(0.0, at - utt.started) for k, (at, _) in enumerate(engine.asked)]
        assert max(leads) < 0.5 + 0.05  # never more than AHEAD (+ scheduling slack) ahead of the listener
        assert engine.asked[-1][0] - utt.started > 1.6 - 0.5 - 0.2 - 0.1  # so the last came late, as needed
    finally:
        await worker.on_stop()


async def test_a_failed_scheduler_is_restarted_and_speech_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeVoice(0.2)
    worker, _ = await tts_worker(monkeypatch, engine)
    try:
        broken = Utterance(1, CAUSE, tts.DEFAULT_VOICE)
        broken.pending.append(("boom", 0.0))
        monkeypatch.setattr(broken, "lead", lambda now: 1 / 0)  # the scheduler trips over it
        worker._utterances["broken"] = broken
        worker._wake.set()
        first = worker._scheduler
        await asyncio.wait_for(asyncio.wait({first}), 5)
        assert isinstance(first.exception(), ZeroDivisionError)
        del worker._utterances["broken"]
        utt = Utterance(1, CAUSE, tts.DEFAULT_VOICE)
        worker._utterances["s"] = utt
        utt.pending.append(("still speaking", 0.0))
        worker._wake.set()
        await asyncio.wait_for(utt.audio.get(), 5)
        assert worker._scheduler is not first and [t for _, t in engine.asked] == ["still speaking"]
    finally:
        await worker.on_stop()


class Speakers:
    """Turns of several sessions on one TTS worker, and when things happened to them."""

    def __init__(self, worker: TtsWorker, published: Published, engine: FakeVoice) -> None:
        self.worker, self.published, self.engine = worker, published, engine

    async def first_chunk(self, session: str) -> float:
        """When the session's first audio chunk went out (the others' chunks before it are passed over)."""
        while True:
            _, kw = await asyncio.wait_for(self.published.out.get(), 5)
            if kw["cause"].session == session:
                return float(kw["at"])

    def turn(self, session: str, *texts: str) -> Utterance:
        utt = Utterance(1, cast(Any, SimpleNamespace(session=session)), tts.DEFAULT_VOICE)
        self.worker._begin(session, utt)
        utt.pending.extend((text, 0.0) for text in texts)
        self.worker._wake.set()
        return utt

    def asked(self, text: str) -> float:
        return next(t for t, said in self.engine.asked if said == text)


async def test_sharing_the_cpu_a_turn_starts_with_more_speech_ready_the_more_share_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = FakeVoice(0.5)
    worker, published = await tts_worker(monkeypatch, engine)
    speakers = Speakers(worker, published, engine)
    turn, first_chunk, asked = speakers.turn, speakers.first_chunk, speakers.asked
    try:
        alone = turn("alone", "first piece")
        await first_chunk("alone")  # alone: its first piece plays at once
        assert not alone.ended  # and its reply is still being written: the CPU is shared from now on

        pair = turn("pair", "a first piece")  # one other: its 0.5 s first piece is enough
        started = await first_chunk("pair")
        assert started - asked("a first piece") < tts.HOLD_PER_OTHER / 2 and pair.synthesized == 0.5

        third = turn("third", "the first piece")  # two others: held until 1.0 s is ready
        await asyncio.wait_for(third.grew.wait(), 5)
        third.pending.extend([("its second", 0.0), ("its third", 0.0)])
        worker._wake.set()
        started = await first_chunk("third")
        assert started >= asked("its second") and third.synthesized >= 2 * tts.START_PER_OTHER

        turn("late", "only piece")  # three others want 1.5 s; nothing more comes: it starts after its hold
        started = await first_chunk("late")
        assert started - asked("only piece") >= min(tts.HOLD, 3 * tts.HOLD_PER_OTHER) - 0.05
    finally:
        await worker.on_stop()


async def test_users_who_just_stopped_speaking_count_among_those_sharing_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Their replies come soon: a turn that starts first must not start on a first piece that
    runs out when theirs take the CPU. Counted again while the piece is held."""
    engine = FakeVoice(0.5)
    worker, published = await tts_worker(monkeypatch, engine)

    async def user_stopped(session: str) -> None:
        await worker.on_message(cast(Any, SimpleNamespace(session=session, turn=0, body=SpeechEnded(1000.0))))

    speakers = Speakers(worker, published, engine)
    turn, first_chunk, asked = speakers.turn, speakers.first_chunk, speakers.asked
    try:
        worker._coming["long ago"] = time.monotonic() - tts.COMING  # its reply came or never will
        turn("alone", "first piece")
        started = await first_chunk("alone")  # no one else: it plays at once
        assert started - asked("first piece") < tts.HOLD_PER_OTHER / 2
        worker._stop("alone")

        await user_stopped("b")
        await user_stopped("c")  # two others to come: 1.0 s is enough
        first = turn("a", "a first piece")
        await asyncio.wait_for(first.grew.wait(), 5)
        await user_stopped("d")
        await user_stopped("e")  # four: 2.0 s now, and a longer hold
        first.pending.append(("a second piece", 0.0))
        worker._wake.set()
        started = await first_chunk("a")
        assert started - asked("a first piece") >= min(tts.HOLD, 4 * tts.HOLD_PER_OTHER) - 0.05
        assert first.synthesized == 1.0 and "long ago" not in worker._coming
    finally:
        await worker.on_stop()


async def test_a_long_piece_for_a_listener_about_to_run_dry_is_said_in_two_halves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = FakeVoice(0.5)
    worker, _ = await tts_worker(monkeypatch, engine)
    long = "the reply's next words came late, and they are many of them"
    try:
        for cost in (35.0, 35.0, 35.0, 100.0):  # load came: the whole piece may take 1.2 s (the average says 0.6)
            worker._word_cost.add(cost)
        late = Utterance(1, CAUSE, tts.DEFAULT_VOICE, synthesized=1.4, started=time.monotonic())
        worker._utterances["late"] = late
        late.pending.append((long, 0.0))
        worker._wake.set()
        said = [(await asyncio.wait_for(late.audio.get(), 5))[0] for _ in range(2)]  # type: ignore[index]
        assert said == ["the reply's next words came late,", "and they are many of them"]

        ahead = Utterance(1, CAUSE, tts.DEFAULT_VOICE, synthesized=2.4, started=time.monotonic())
        worker._utterances["ahead"] = ahead
        ahead.pending.append((long, 0.0))
        worker._wake.set()
        assert (await asyncio.wait_for(ahead.audio.get(), 5))[0] == long  # type: ignore[index]  # time enough: whole
    finally:
        await worker.on_stop()


async def test_a_sentence_the_model_is_slow_to_end_is_begun_before_the_listener_runs_dry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = FakeVoice(0.5)
    worker, _ = await tts_worker(monkeypatch, engine)

    async def event(body: Any) -> None:
        await worker.on_message(cast(Any, SimpleNamespace(session="s", turn=1, body=body)))

    try:
        begun = time.monotonic()
        utt = Utterance(1, CAUSE, tts.DEFAULT_VOICE, synthesized=1.0, started=begun)
        worker._utterances["s"] = utt
        await event(Sentence("Well, the moon is", 0))
        await asyncio.wait_for(utt.audio.get(), 5)
        await event(Words("about", 4))  # one word: not worth saying alone
        await event(Words("about 238,000", 4))  # and the model is slow to write the rest
        text, _, _ = await asyncio.wait_for(utt.audio.get(), 5)  # type: ignore[misc]
        asked = engine.asked[-1][0] - begun
        assert text == "about 238,000"
        # not before the listener had EARLY_MARGIN + the words' cost (2 × 35 ms) of speech left
        assert asked >= 1.5 - tts.EARLY_MARGIN - 2 * tts.MS_PER_WORD / 1000 - 0.02
        await event(Words("about 238,000 miles", 4))  # the next word: too few left to say alone
        await event(Sentence("about 238,000 miles away.", 1))
        text, _, _ = await asyncio.wait_for(utt.audio.get(), 5)  # type: ignore[misc]
        assert text == "miles away."  # the words said early are not said again
        assert [t for _, t in engine.asked] == ["Well, the moon is", "about 238,000", "miles away."]
    finally:
        await worker.on_stop()


def test_a_sentence_leaves_out_the_words_said_before_it_came() -> None:
    utt = Utterance(1, CAUSE, tts.DEFAULT_VOICE)
    assert utt.sentence("Well, the moon is") == "Well, the moon is" and utt.words_in == 4
    utt.running = (4, "about 238,000 miles")
    assert utt.unsaid() == ["about", "238,000", "miles"]
    utt.words_taken += 2  # "about 238,000" said early
    assert utt.unsaid() == ["miles"]
    assert utt.sentence("about") == ""  # all of it said already
    assert utt.unsaid() == []  # these words came before that sentence: stale now
    assert utt.sentence("238,000 miles away.") == "miles away."
    assert utt.sentence("Far!") == "Far!" and (utt.words_in, utt.words_taken) == (9, 9)


def test_a_piece_is_expected_to_cost_the_most_of_the_average_and_the_last_few_pieces() -> None:
    cost = tts.WordCost()
    assert cost.expected() == tts.MS_PER_WORD  # nothing measured yet
    for ms in (30.0, 30.0, 30.0, 30.0, 30.0, 30.0):
        cost.add(ms)
    assert 30 < cost.expected() < 31  # steady: the average
    cost.add(95.0)  # a burst of load: the average follows a few pieces late, the estimate at once
    assert cost.expected() == 95.0
    assert cost.average < 50
    for _ in range(tts.RECENT_COSTS - 1):
        cost.add(30.0)
    assert cost.expected() == 95.0  # still among the last few
    cost.add(30.0)
    assert cost.expected() < 40  # the burst is over: back to about the average


class HeldRecognizer:
    """Transcribes only when let go; counts the calls."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.calls = 0

    def transcribe(self, samples: Any) -> str:
        self.calls += 1
        self.go.wait(10)
        return "words"


def stt_worker(recognizer: HeldRecognizer) -> tuple[SttWorker, Published]:
    published = Published()
    worker = SttWorker(cast(Any, published))
    worker._pool = ThreadPoolExecutor(max_workers=stt.WORKERS)
    worker._running = 0
    worker._trimmer = HeapTrimmer()
    worker._vad_engine = "onnxruntime"
    worker._streams = {}
    worker.recognizer = recognizer
    return worker, published


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_recognition_counts_until_its_thread_is_done_even_if_its_waiter_is_cancelled() -> None:
    recognizer = HeldRecognizer()
    worker, _ = stt_worker(recognizer)
    try:
        stream = worker._stream("s", 16_000)
        waiter = asyncio.ensure_future(worker._recognize(stream, np.zeros(16, dtype=np.float32)))
        other = worker._recognize(stream, np.zeros(16, dtype=np.float32))
        assert worker._running == stream.running == 2
        waiter.cancel()
        await asyncio.wait([waiter])  # cancelled while the recognizer is held
        assert worker._running == 2, "its thread still works on it"
        recognizer.go.set()
        assert await other == "words"
        await until(lambda: worker._running == stream.running == 0)
    finally:
        recognizer.go.set()
        worker._pool.shutdown(wait=True)


@pytest.mark.parametrize(("others", "own"), [(0, 0), (0, stt.WORKERS), (stt.WORKERS, 0)])
async def test_interims_wait_while_other_sessions_fill_the_recognition_threads(others: int, own: int) -> None:
    """Many sessions speaking at once: their final transcripts, which start replies, must
    not queue behind interims. A session's own earlier transcripts never hold it back."""
    recognizer = HeldRecognizer()
    worker, _ = stt_worker(recognizer)
    worker._stream("s", MIC_RATE).running = own  # as if transcripts were being computed
    worker._running = others + own
    env = SimpleNamespace(session="s", id="e", extra=[b""])
    pcm = np.concatenate([speech("What is the capital of France, and how big is it today?"), silence(0.02)])
    step = MIC_RATE // 50
    try:
        for seq, offset in enumerate(range(0, int(MIC_RATE * 2.0), step)):  # 2 s: well past one interim's worth
            env.extra = [pcm[offset : offset + step].tobytes()]
            await worker._audio(cast(Any, env), AudioIn(seq, MIC_RATE))
        stream = worker._streams["s"]
        assert stream.speaking
        assert (stream.interim is not None) == (others == 0)
    finally:
        recognizer.go.set()
        for s in worker._streams.values():
            if s.interim is not None:
                await asyncio.wait_for(s.interim, 5)
        worker._pool.shutdown(wait=True)


class QuickRecognizer:
    """Transcribes at once; keeps the length of what it was given."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def transcribe(self, samples: Any) -> str:
        self.seconds.append(len(samples) / STT_RATE)
        return "words"


async def speak(pcm: Int16, recognizer: Any = None) -> tuple[list[float], Any, list[str]]:
    """``pcm`` into an STT worker as a microphone sends it (20 ms chunks): when, on the audio's
    own clock, each utterance was said to be over, the recognizer, and the final transcripts."""
    recognizer = recognizer or QuickRecognizer()
    worker, published = stt_worker(cast(Any, recognizer))
    env = SimpleNamespace(session="s", id="e", extra=[b""])
    step, ends, finals = MIC_RATE // 50, [], []
    try:
        for seq, offset in enumerate(range(0, len(pcm), step)):
            env.extra = [pcm[offset : offset + step].tobytes()]
            await worker._audio(cast(Any, env), AudioIn(seq, MIC_RATE))
            while not published.out.empty():
                body, _ = published.out.get_nowait()
                if isinstance(body, SpeechEnded):
                    ends.append((offset + step) / MIC_RATE)
                elif isinstance(body, Transcript) and body.final:
                    finals.append(body.text)
    finally:
        worker._pool.shutdown(wait=True)
    return ends, recognizer, finals


async def test_an_utterance_ends_a_quarter_second_after_the_last_word_not_when_the_vad_lets_go() -> None:
    words = voiced(speech("Tell me a joke about robots."))
    ends, recognizer, _ = await speak(np.concatenate([silence(0.3), words, silence(1.0)]))
    last_word = 0.3 + len(words) / MIC_RATE
    assert len(ends) == 1 and last_word < ends[0] <= last_word + stt.END_QUIET + 0.05
    assert recognizer.seconds and recognizer.seconds[-1] >= len(words) / MIC_RATE - 0.1  # the whole question


async def test_a_soft_speaker_is_heard_to_the_end() -> None:
    """Quiet is relative to the speaker: words 26 dB down are words, not a pause."""
    words = voiced(speech("What is the capital of France, and how big is it?"))
    soft = (words.astype(np.float32) * 0.05).astype("<i2")
    ends, recognizer, _ = await speak(np.concatenate([silence(0.3), soft, silence(1.0)]))
    last_word = 0.3 + len(words) / MIC_RATE
    assert len(ends) == 1 and last_word < ends[0] <= last_word + 0.6
    assert recognizer.seconds[-1] >= len(words) / MIC_RATE - 0.1


class Heard:
    """Whisper, keeping what it heard."""

    def __init__(self) -> None:
        self.whisper = WhisperRecognizer()
        self.texts: list[str] = []

    def transcribe(self, samples: Any) -> str:
        self.texts.append(self.whisper.transcribe(samples))
        return self.texts[-1]


async def test_a_soft_speakers_last_word_is_not_taken_for_a_pause() -> None:
    words = voiced(speech("Who built the first computer?"))
    soft = (words.astype(np.float32) * 0.05).astype("<i2")
    ends, heard, finals = await speak(np.concatenate([silence(0.3), soft, silence(1.0)]), Heard())
    # (Transcripts started at a pause that the speech then went on from finish in any order.)
    assert len(ends) == 1 and len(finals) == 1, heard.texts
    assert finals[0].lower().rstrip(".?!").endswith("computer"), heard.texts


@pytest.mark.parametrize("others", [0, stt.WORKERS])
async def test_an_early_transcript_waits_for_a_longer_pause_while_others_fill_the_threads(others: int) -> None:
    recognizer = QuickRecognizer()
    worker, _ = stt_worker(cast(Any, recognizer))
    stream = worker._stream("s", STT_RATE)
    worker._running = others
    chunk = STT_RATE // 50  # 20 ms
    loud, quiet = np.full(chunk, 0.1, dtype=np.float32), np.zeros(chunk, dtype=np.float32)
    try:
        stream.speech = [loud]
        worker._early(stream, loud)

        def pause(seconds: float) -> None:
            for _ in range(round(seconds * 50)):
                stream.speech.append(quiet)
                worker._early(stream, quiet)

        pause(0.12)
        assert (stream.early is not None) == (others == 0)  # at 0.1 s of quiet, if the threads are free
        pause(0.04)
        assert stream.early is not None  # at 0.15 s in any case
        await asyncio.wait_for(stream.early, 5)
        assert len(recognizer.seconds) == 1
    finally:
        worker._pool.shutdown(wait=True)
