"""The per-turn latency ledger, from bus timestamps alone (no I/O).

A turn's zero is when the user's input was received: the message's arrival at the edge
for typed text, the end of speech (VAD) for a spoken turn. Each hop is the first time
its message appeared for that turn, in milliseconds after the zero.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

HOPS = (
    "vad_end", "stt_final", "user_input", "accepted", "llm_first_token", "first_sentence", "tts_first_chunk",
    "first_audio_out", "first_frame_sent", "playback_started", "reply_end",
)  # fmt: skip
_FIRST_OF = {
    "chat.accepted": "accepted",
    "chat.delta": "llm_first_token",
    "chat.sentence": "first_sentence",
    "voice.tts_audio": "tts_first_chunk",
    "voice.audio_out": "first_audio_out",
}
SUMMARY = {"ttft_ms": "llm_first_token", "ttfa_ms": "first_audio_out", "total_ms": "reply_end"}
"""Each turn's summary figures: the hop each one is the time of."""
BUCKETS_MS = (50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)


@dataclass(slots=True)
class Turn:
    session: str
    turn: int
    zero: float
    source: str
    hops: dict[str, float] = field(default_factory=dict)
    """Hop -> unix seconds."""
    character: str = ""
    provider: str = ""
    interrupted: bool = False

    def ms(self, hop: str) -> float | None:
        ts = self.hops.get(hop)
        return None if ts is None else round((ts - self.zero) * 1000, 2)

    def row(self) -> tuple[Any, ...]:
        """``(session, turn, character, provider, source, started_at, hops, ttft, ttfa, total, interrupted)``."""
        hops = {h: self.ms(h) for h in HOPS if h in self.hops}
        ttft, ttfa, total = (self.ms(hop) for hop in SUMMARY.values())
        return (self.session, self.turn, self.character or None, self.provider or None, self.source, self.zero,
                hops, ttft, ttfa, total, self.interrupted)  # fmt: skip


@dataclass(slots=True)
class Histogram:
    buckets: tuple[int, ...] = BUCKETS_MS
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    sum: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        i = next((k for k, le in enumerate(self.buckets) if value <= le), len(self.buckets))
        self.counts[i] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        return {"buckets": list(self.buckets), "counts": list(self.counts), "sum": self.sum, "count": self.count}


class Ledger:
    def __init__(self, max_turns: int = 10_000) -> None:
        self._max = max_turns
        self.turns: OrderedDict[tuple[str, int], Turn] = OrderedDict()
        self.dirty: set[tuple[str, int]] = set()
        self._inputs: OrderedDict[str, tuple[float, str]] = OrderedDict()  # user_text id -> (ts, source)
        self._speech: dict[str, dict[str, float]] = {}  # session -> hops of an utterance not yet a turn
        self.histograms = {"ttft_ms": Histogram(), "ttfa_ms": Histogram(), "total_ms": Histogram()}
        self.last_turn: OrderedDict[str, int] = OrderedDict()
        """Session -> its latest turn."""

    def feed(self, kind: str, header: dict[str, Any], body: Callable[[], dict[str, Any]]) -> None:
        """One bus message; ``body()`` decodes its body (called only for the types whose body matters)."""
        session, ts = header.get("session", ""), float(header.get("ts", 0.0))
        if not session:
            return
        turn = int(header.get("turn", 0))
        if kind == "voice.speech_start":
            self._speech[session] = {}
        elif kind == "voice.speech_end":
            self._speech.setdefault(session, {})["vad_end"] = ts
        elif kind == "voice.transcript":
            b = body()
            if b.get("final") and b.get("text"):
                self._speech.setdefault(session, {}).setdefault("stt_final", ts)
        elif kind == "chat.user_text":
            self._inputs[header["id"]] = (ts, str(body().get("source", "ws")))
            if len(self._inputs) > self._max:
                self._inputs.popitem(last=False)
        elif kind in ("chat.accepted", "chat.turn") and (session, turn) not in self.turns:
            # both follow the persisted user message (their parent), in either order
            self._start(session, turn, header.get("parent"), ts)
            self._hop(kind, session, turn, ts, body)
        else:
            self._hop(kind, session, turn, ts, body)

    def _start(self, session: str, turn: int, parent: str | None, ts: float) -> None:
        received, source = self._inputs.pop(parent or "", (ts, "ws"))
        speech = self._speech.pop(session, {}) if source == "voice" else {}
        zero = speech.get("vad_end", received)
        t = Turn(session, turn, zero, source, {**speech, "user_input": received})
        key = (session, turn)
        self.turns[key] = t
        self.last_turn[session] = max(turn, self.last_turn.get(session, 0))
        self.last_turn.move_to_end(session)
        if len(self.last_turn) > self._max:
            self.last_turn.popitem(last=False)
        self.dirty.add(key)
        while len(self.turns) > self._max:
            old, _ = self.turns.popitem(last=False)
            self.dirty.discard(old)

    def _hop(self, kind: str, session: str, turn: int, ts: float, body: Callable[[], dict[str, Any]]) -> None:
        t = self.turns.get((session, turn))
        if t is None:
            return
        if kind in _FIRST_OF:
            name = _FIRST_OF[kind]
        elif kind == "telemetry.mark":
            mark = body()
            name = str(mark.get("name", ""))
            if name not in HOPS:
                return
            ts = float(mark.get("at") or ts)
        elif kind == "chat.turn":
            t.character = str(body().get("character", ""))
            self.dirty.add((session, turn))
            return
        elif kind == "chat.reply":
            b = body()
            t.provider, t.interrupted = str(b.get("provider", "")), bool(b.get("interrupted"))
            name = "reply_end"
        else:
            return
        if name in t.hops:
            return
        t.hops[name] = ts
        self.dirty.add((session, turn))
        if name == "reply_end":
            for metric, hop in (("ttft_ms", "llm_first_token"), ("total_ms", "reply_end")):
                value = t.ms(hop)
                if value is not None:
                    self.histograms[metric].observe(value)
        if name == "first_audio_out":
            value = t.ms(name)
            if value is not None:
                self.histograms["ttfa_ms"].observe(value)

    def take_dirty(self) -> list[tuple[Any, ...]]:
        rows = [self.turns[k].row() for k in self.dirty if k in self.turns]
        self.dirty.clear()
        return rows

    def mark_dirty(self, keys: Iterable[tuple[str, int]]) -> None:
        self.dirty.update(k for k in keys if k in self.turns)
