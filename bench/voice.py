"""Voice benchmark: voice-to-voice latency and concurrent speaking sessions, all local.

The whole system runs as in production (``run.py``: broker, PostgreSQL, chat, voice,
the embedded SmolLM2 model, the edge). Questions are spoken by the Piper voice, sent at
48 kHz in 20 ms chunks on the real-time clock, like a microphone.

- latency: ``--turns`` questions, one at a time, each in a fresh audio session: from the
  end of the user's speech to the first audio frame out of the edge, with the per-hop
  breakdown from bus timestamps (a tap in this process; ``mono`` is the host-wide
  monotonic clock): VAD end, STT final, LLM first token, first sentence, TTS first chunk,
  first frame out.
- concurrency: N sessions ask at once; a session keeps up when, played from its first
  frame with a 300 ms jitter buffer, its audio never runs dry over the first
  ``--listen`` seconds. The largest N where every session keeps up is reported, and for
  each N the closest margin: how far ahead of need the latest-coming audio of any session
  still came (negative: by how much it came too late).
- end of speech: the end of the question's last word (the silence Piper leaves after a
  sentence, up to ~0.2 s, is cut: until 2026-11-22 it was counted as speech, which made
  every figure look up to that much better).
- memory: RSS of every process of the system and their children but PostgreSQL (the model
  server and the MCP tool servers, node programs the executor starts, listed apart):
  once it is up, at the peak of the concurrency runs (sampled every 0.25 s), and settled
  after them.
- the machine now: before the system starts, the models alone in this process (Whisper on
  each question, Piper on a 3-word first piece, one core each) and a fixed Python loop.
  This VM's speed drifts by up to ~2x over hours; these put a run's figures in context.

Usage: python bench/voice.py [--turns 24] [--sessions 1 2 4 8 10] [--listen 6] [--log FILE]
Writes bench/results/voice.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bus.chat  # noqa: E402  (registers the types the tap decodes)
import bus.voice  # noqa: E402, F401
from bench.common import free_port, pct, python_loop_ms, wait_healthy  # noqa: E402
from bus import Connection, Endpoints, Envelope, type_prefix  # noqa: E402
from tests.voice.audio import MIC_RATE, at, audio_frame, silence, speech, voiced  # noqa: E402

RESULTS = ROOT / "bench" / "results"
QUESTIONS = [
    "What is the capital of France?", "Why is the sky blue?", "Tell me a joke about robots.",
    "How do airplanes fly?", "What is your favorite color?", "Can you explain gravity?",
    "What should I cook tonight?", "How far away is the moon?", "What makes rain fall?",
    "Who built the first computer?", "How do magnets work?", "What is a black hole?",
    "Why do cats purr?", "How do bees make honey?", "What is the tallest mountain?",
    "Why do leaves change color?", "How does a rainbow form?", "What do whales eat?",
    "How old is the sun?", "Why is the ocean salty?", "How do birds find their way?",
    "What is the speed of light?", "Why do we dream?", "How do volcanoes erupt?",
]  # fmt: skip
"""Distinct, so no turn's prompt is one the model's cache still holds whole (``--turns`` up to
their number; beyond it questions repeat)."""
HOPS = ("vad_end", "stt_final", "llm_first_token", "first_sentence", "tts_first_chunk", "first_frame_out")
BUFFER = 0.3
SETTLE = 3.0
"""Seconds after the last session before the settled RSS is taken (the voice process gives
freed heap back once speech work has paused for a second)."""


class Tap:
    """First time (host monotonic, seconds) each kind of event was seen per session."""

    KINDS: ClassVar[dict[str, str]] = {
        "voice.speech_end": "vad_end", "voice.transcript": "stt_final", "chat.delta": "llm_first_token",
        "chat.sentence": "first_sentence", "voice.tts_audio": "tts_first_chunk",
    }  # fmt: skip

    def __init__(self, endpoints: Endpoints) -> None:
        self.conn = Connection(endpoints, "bench-tap")
        self.first: dict[str, dict[str, float]] = {}

    async def start(self) -> None:
        await self.conn.start(self._on, subscribe=[type_prefix(k) for k in self.KINDS])

    def _on(self, env: Envelope[Any], queue: str | None) -> None:
        if env.type == "voice.transcript" and not env.body.final:
            return
        self.first.setdefault(env.session, {}).setdefault(self.KINDS[env.type], env.header.mono / 1e9)


class VoiceClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.session = ""
        self.audio: list[tuple[float, float]] = []  # (arrival, seconds)
        self.first_audio = asyncio.Event()
        self.started = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            kind = frame.get("type")
            if kind == "audio":
                self.audio.append((time.monotonic(), len(base64.b64decode(frame["audio_data"])) / 2 / MIC_RATE))
                self.first_audio.set()
            elif kind == "status" and "session_id" in frame:
                self.session = frame["session_id"]
                self.started.set()
            elif kind == "error":
                print("  error frame:", frame, file=sys.stderr)

    async def start(self) -> None:
        await self.ws.send_str(json.dumps({"action": "start_session", "input_type": "audio", "sample_rate": MIC_RATE}))
        await asyncio.wait_for(self.started.wait(), 30)

    async def ask(self, question: np.ndarray[Any, Any], speech_len: int) -> float:
        """Stream the question; returns the monotonic time its speech ended."""
        loop = asyncio.get_running_loop()
        step = MIC_RATE // 50
        start = loop.time()
        speech_end = start
        for i, offset in enumerate(range(0, len(question), step)):
            await self.ws.send_str(json.dumps(audio_frame(question[offset : offset + step])))
            if offset < speech_len <= offset + step:
                speech_end = start + (speech_len / MIC_RATE)
            await at(start + (i + 1) * 0.02)
        return speech_end

    def margin(self, listen: float) -> float | None:
        """Seconds by which the audio came in time at its closest call over the first
        ``listen`` seconds, played from the first frame with the jitter buffer (negative: it
        ran dry); None when too little came. The session kept up when it is not negative."""
        if not self.audio:
            return None
        play_start = self.audio[0][0] + BUFFER
        queued = 0.0
        worst = math.inf
        for arrival, seconds in self.audio:
            if queued >= listen:
                break
            worst = min(worst, play_start + queued + 0.05 - arrival)
            queued += seconds
        return worst if queued >= min(listen, 1.0) else None

    async def close(self) -> None:
        await self.ws.send_str(json.dumps({"action": "end_session"}))
        await self.ws.close()
        self.reader.cancel()


def utterance(text: str) -> tuple[np.ndarray[Any, Any], int]:
    """The question, then silence; and where its speech ends (the voice's own trailing
    silence is not speech: latency counts from the last word)."""
    spoken = voiced(speech(text))
    return np.concatenate([silence(0.2), spoken, silence(1.2)]), len(silence(0.2)) + len(spoken)


async def latency(http: aiohttp.ClientSession, url: str, tap: Tap, turns: int) -> dict[str, Any]:
    rows: list[dict[str, float]] = []
    for i in range(turns):
        question, speech_len = utterance(QUESTIONS[i % len(QUESTIONS)])
        client = VoiceClient(await http.ws_connect(f"{url}/ws/ada", max_msg_size=0))
        await client.start()
        ask = asyncio.create_task(client.ask(question, speech_len))
        await asyncio.wait_for(client.first_audio.wait(), 60)
        end = await ask if ask.done() else None
        if end is None:
            end = await ask
        marks = tap.first.get(client.session, {})
        row = {hop: (marks[hop] - end) * 1000 for hop in HOPS[:-1] if hop in marks}
        row["first_frame_out"] = (client.audio[0][0] - end) * 1000
        rows.append(row)
        print(f"  turn {i + 1}: voice-to-voice {row['first_frame_out']:.0f} ms  "
              + "  ".join(f"{h} {row.get(h, float('nan')):.0f}" for h in HOPS[:-1]))  # fmt: skip
        await client.close()
    v2v = [r["first_frame_out"] for r in rows]
    return {
        "turns": len(rows),
        "voice_to_voice_ms": {"p50": pct(v2v, 50), "p90": pct(v2v, 90), "max": max(v2v)},
        "hops_ms_after_end_of_speech_p50": {h: pct([r[h] for r in rows if h in r], 50) for h in HOPS},
        "per_turn": rows,
    }


async def concurrency(
    http: aiohttp.ClientSession, url: str, tap: Tap, counts: list[int], listen: float
) -> list[dict[str, Any]]:
    out = []
    for n in counts:
        clients = [VoiceClient(await http.ws_connect(f"{url}/ws/ada", max_msg_size=0)) for _ in range(n)]
        await asyncio.gather(*(c.start() for c in clients))
        questions = [utterance(QUESTIONS[i % len(QUESTIONS)]) for i in range(n)]
        ends = await asyncio.gather(*(c.ask(q, k) for c, (q, k) in zip(clients, questions, strict=True)))
        deadline = time.monotonic() + 60 + listen
        while time.monotonic() < deadline and not all(
            c.audio and c.audio[-1][0] - c.audio[0][0] >= listen - BUFFER for c in clients
        ):
            await at(asyncio.get_running_loop().time() + 0.2)
        margins = [m for c in clients if (m := c.margin(listen)) is not None]
        kept = sum(m >= 0 for m in margins)
        closest = min(margins) * 1000 if margins else float("nan")
        v2v = [(c.audio[0][0] - e) * 1000 for c, e in zip(clients, ends, strict=True) if c.audio]
        hops = {h: pct([(tap.first.get(c.session, {}).get(h, float("nan")) - e) * 1000
                        for c, e in zip(clients, ends, strict=True)], 50) for h in HOPS[:-1]}  # fmt: skip
        out.append({"sessions": n, "kept_up": kept, "voice_to_voice_p50_ms": pct(v2v, 50), "max_ms": max(v2v or [0]),
                    "closest_margin_ms": closest, "hops_ms_p50": hops})  # fmt: skip
        print(f"  {n} speaking at once: {kept}/{n} kept up (closest margin {closest:.0f} ms),",
              f"voice-to-voice p50 {pct(v2v, 50):.0f} ms;",
              "  ".join(f"{h} {v:.0f}" for h, v in hops.items()))  # fmt: skip
        for c in clients:
            await c.close()
    return out


def _children(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        found = subprocess.run(["pgrep", "-P", pid], check=False, capture_output=True, text=True)
        return found.stdout.split()


def rss_mb(root_pid: int) -> dict[str, float]:
    """RSS of the system's processes and their children but PostgreSQL's, by pid and part."""
    out: dict[str, float] = {}
    todo = [str(root_pid)]
    while todo:
        pid = todo.pop(0)
        todo.extend(_children(pid))
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
        what = cmd.split(" actor ", 1)[1].split(" --")[0] if " actor " in cmd else cmd.rsplit(" ", 1)[-1]
        if "postgres" in cmd:
            continue
        if "mcp-server" in cmd:
            what = "mcp tool server " + what.rsplit("/", 1)[-1]
        out[f"{pid} {what[:40]}"] = rss / 1024
    return out


def actors_mb(rss: dict[str, float]) -> float:
    """Greenroom's own processes: not the model server, not the MCP tool servers (node)."""
    return sum(v for k, v in rss.items() if "llm" not in k and "mcp tool server" not in k)


class PeakRss:
    """The largest total RSS of the actors seen while sampling (every ``every`` seconds)."""

    def __init__(self, root_pid: int, every: float = 0.25) -> None:
        self.root_pid, self.every = root_pid, every
        self.total = 0.0
        self.at: dict[str, float] = {}

    async def sample(self) -> None:
        while True:
            rss = rss_mb(self.root_pid)
            if actors_mb(rss) > self.total:
                self.total, self.at = actors_mb(rss), rss
            await asyncio.sleep(self.every)


async def run(url: str, endpoints: Endpoints, args: argparse.Namespace, peak: PeakRss) -> dict[str, Any]:
    tap = Tap(endpoints)
    await tap.start()
    async with aiohttp.ClientSession() as http:
        warm, k = utterance("Hello there.")
        c = VoiceClient(await http.ws_connect(f"{url}/ws/ada", max_msg_size=0))
        await c.start()
        await c.ask(warm, k)
        await asyncio.wait_for(c.first_audio.wait(), 120)
        await c.close()
        print("latency, one session at a time:")
        lat = await latency(http, url, tap, args.turns)
        print("concurrent speaking sessions:")
        sampler = asyncio.create_task(peak.sample())
        conc = await concurrency(http, url, tap, args.sessions, args.listen)
        sampler.cancel()
    await tap.conn.close()
    await asyncio.sleep(SETTLE)
    return {"latency": lat, "concurrency": conc}


FIRST_PIECES = ["The capital of", "The sky looks", "Why did the", "Airplanes fly because", "My favorite color",
                "Gravity is a"]  # fmt: skip
"""Pieces as long as a reply's first (``SentenceSplitter.FIRST_WORDS``: 3 words; 4 until 2026-11-23)."""


def machine_now(turns: int) -> dict[str, Any]:
    """The models alone, and a fixed Python loop, in this process before the system starts."""
    from actors.speech import STT_RATE, WhisperRecognizer, make_piper
    from config.settings import settings

    loop_ms = python_loop_ms()
    whisper = WhisperRecognizer(threads=1, workers=1)
    piper = make_piper(settings().tts_engine, Path(tempfile.mkdtemp(prefix="grv-voice-")), "en_US-joe-medium")
    heard, said = [], []
    for i in range(min(max(turns, 6), 12)):
        pcm = voiced(speech(QUESTIONS[i % len(QUESTIONS)], STT_RATE), STT_RATE)
        question = np.asarray(pcm / 32768, dtype=np.float32)
        t = time.perf_counter()
        whisper.transcribe(question)
        heard.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        piper.synthesize(FIRST_PIECES[i % len(FIRST_PIECES)])
        said.append((time.perf_counter() - t) * 1000)
    return {"python_loop_5m_ms": loop_ms, "whisper_question_p50_ms": pct(heard, 50),
            "piper_first_piece_p50_ms": pct(said, 50), "tts_engine": settings().tts_engine}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=24)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8, 10])
    parser.add_argument("--listen", type=float, default=6.0)
    parser.add_argument("--log", type=Path, help="write the system's debug log (JSON lines) here")
    args = parser.parse_args()
    now = machine_now(args.turns)
    print("the machine now (models alone, one core):", {k: round(v) if isinstance(v, float) else v
                                                        for k, v in now.items()})  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="grv-", dir="/tmp"))
    http_port, llm_port = free_port(), free_port()
    env = {**os.environ, "GREENROOM_DATA_DIR": str(tmp), "GREENROOM_HTTP_PORT": str(http_port),
           "GREENROOM_LLM_PORT": str(llm_port), "GREENROOM_LOG_LEVEL": "debug" if args.log else "warning",
           "GREENROOM_LOG_FORMAT": "json"}  # fmt: skip
    for var in ("DATABASE_URL", "OPENAI_BASE_URL"):
        env.pop(var, None)
    log = args.log.open("w") if args.log else None
    system = subprocess.Popen([sys.executable, str(ROOT / "run.py")], cwd=ROOT, env=env,
                              stderr=log or subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    endpoints = Endpoints(f"ipc://{tmp.resolve()}/run/bus")
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "now": now},
        "setup": "run.py, all local models (silero VAD, Whisper tiny.en, SmolLM2-135M, Piper joe)",
    }
    try:
        asyncio.run(wait_healthy(url))
        idle = rss_mb(system.pid)
        peak = PeakRss(system.pid)
        report.update(asyncio.run(run(url, endpoints, args, peak)))
        rss = rss_mb(system.pid)
        report["rss_mb"] = rss
        report["rss_mb_actors_total"] = actors_mb(rss)
        report["rss_mb_actors_at_start"] = actors_mb(idle)
        report["rss_mb_actors_peak"] = peak.total
        report["rss_mb_at_peak"] = peak.at
        report["rss_mb_model_server"] = sum(v for k, v in rss.items() if "llm" in k)
        report["rss_mb_tool_servers"] = sum(v for k, v in rss.items() if "mcp tool server" in k)
    finally:
        system.send_signal(signal.SIGTERM)
        system.wait(timeout=60)
        if log is not None:
            log.close()
    report["targets"] = "voice-to-voice p50 <= 600 ms, p90 <= 900 ms; >= 8 concurrent speaking sessions; < 500 MB RSS"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "voice.json").write_text(json.dumps(report, indent=2) + "\n")
    lat = report["latency"]["voice_to_voice_ms"]
    print(f"voice-to-voice p50 {lat['p50']:.0f} ms  p90 {lat['p90']:.0f} ms")
    print("hops (p50, ms after end of speech):", report["latency"]["hops_ms_after_end_of_speech_p50"])
    print(f"RSS: actors {report['rss_mb_actors_at_start']:.0f} MB at start, {report['rss_mb_actors_peak']:.0f} MB at",
          f"peak (concurrency), {report['rss_mb_actors_total']:.0f} MB after; model server",
          f"{report['rss_mb_model_server']:.0f} MB, MCP tool servers",
          f"{report['rss_mb_tool_servers']:.0f} MB")  # fmt: skip
    print(f"written to {RESULTS / 'voice.json'}")


if __name__ == "__main__":
    main()
