"""The embedded SmolLM2 model, for real: the requantized weights it serves, warmed, and a
streamed, non-empty reply through the whole stack."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from actors.llm_server import SERVED_FILE, model_path, model_threads, prepare_model, start_server, warm
from config.characters import load_cards
from config.process import group_niceness
from tests.chat.conftest import ChatSystem
from tests.conftest import free_tcp_base

SLOTS = 2


@pytest.fixture(scope="module")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_model(tmp_path_factory.mktemp("data"))  # as the llm actor does at start


@pytest.fixture(scope="module")
def smollm(served_model: Path) -> Iterator[str]:
    port = free_tcp_base(1)
    server: Any = start_server(port, n_ctx=2048, parallel=SLOTS, model=served_model)
    url = f"http://127.0.0.1:{port}/v1"
    # as the llm actor does before it says it is ready (run.py tells it to leave emotion tags out)
    assert asyncio.run(warm(url, SLOTS, emotion_tags=False)) == len(load_cards())
    yield url
    del server


@pytest.fixture
def llm_base_url(smollm: str) -> str:
    return smollm


def test_the_model_leaves_two_cores_to_speech_and_the_actors_and_never_spins_on_a_shared_one() -> None:
    # one thread while it shares cores with speech (2-core machines: its barrier stalls),
    # all cores but two on larger machines, up to four
    assert [model_threads(n) for n in (1, 2, 3, 4, 6, 8, 64)] == [1, 1, 1, 2, 4, 4, 4]


PRIORITY_PROBE = """
import os
from config.process import group_niceness, lower_priority
grouped = lower_priority(19)
print(grouped, os.nice(0), group_niceness())
"""


@pytest.mark.parametrize("own_session", [True, False])
def test_the_model_process_yields_the_cpu_across_scheduling_groups_too(own_session: bool) -> None:
    """Linux shares the CPU between sessions' groups first, niceness counts only inside one:
    started in a session of its own (as the supervisor starts it), the model's niceness must be
    its group's too, or it takes a core from speech whatever its niceness. Started from a
    shell's session, the shell's other programs keep their group's priority."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", PRIORITY_PROBE], capture_output=True, text=True, check=True,
        start_new_session=own_session, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    grouped, niceness, group = out.stdout.split()
    assert niceness == "19"
    if not own_session:  # the caller's group is left as it was
        assert (grouped, group) == ("False", str(group_niceness()))
    elif group != "None":  # a group of its own, shown by the kernel: niced with the process
        assert (grouped, group) == ("True", "19")
    else:  # no autogroups here (or the kernel shows none): niceness is all there is
        assert grouped == "False"


@pytest.mark.parametrize(
    ("text", "niceness"),
    [("/autogroup-7423 nice 0\n", 0), ("/autogroup-12 nice 19\n", 19), ("", None), (None, None)],
)
def test_a_scheduling_group_the_kernel_does_not_show_reads_as_none(
    tmp_path: Path, text: str | None, niceness: int | None
) -> None:
    # "" is what a container's processes read when they sit in the kernel's default group
    path = tmp_path / "autogroup"
    if text is not None:
        path.write_text(text)
    assert group_niceness(str(path)) == niceness


def test_lowering_the_group_waits_out_the_kernels_rate_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CAP_SYS_ADMIN the kernel takes one group niceness change in 0.1 s (EAGAIN)."""
    import builtins
    import errno
    import os

    from config import process

    path = tmp_path / "autogroup"
    path.write_text("/autogroup-5 nice 0\n")
    writes: list[str] = []

    def kernel(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode:
            writes.append(mode)
            if len(writes) == 1:
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(process, "AUTOGROUP", str(path))
    monkeypatch.setattr(process, "open", kernel, raising=False)
    monkeypatch.setattr(os, "nice", lambda n: n)  # this test's own process stays as it is
    monkeypatch.setattr(os, "getsid", lambda pid: os.getpid())
    assert process.lower_priority(19)
    assert len(writes) == 2 and process.group_niceness(str(path)) == 19


def test_the_served_model_is_the_shipped_one_requantized_to_q8_0(served_model: Path) -> None:
    assert served_model.name == SERVED_FILE and served_model.parent.name == "models"
    shipped, served = gguf.GGUFReader(model_path()), gguf.GGUFReader(served_model)
    meta = {f.name: f.contents() for f in shipped.fields.values() if not f.name.startswith("GGUF.")}
    assert {f.name: f.contents() for f in served.fields.values() if not f.name.startswith("GGUF.")} == meta
    assert [t.name for t in served.tensors] == [t.name for t in shipped.tensors]
    requantized = 0
    for before, after in zip(shipped.tensors, served.tensors, strict=True):
        if before.tensor_type != gguf.GGMLQuantizationType.Q4_1:
            assert after.tensor_type == before.tensor_type
            assert np.array_equal(np.asarray(after.data), np.asarray(before.data))
            continue
        assert after.tensor_type == gguf.GGMLQuantizationType.Q8_0
        old = gguf.quants.dequantize(before.data, before.tensor_type)
        new = gguf.quants.dequantize(after.data, after.tensor_type)
        assert new.shape == old.shape
        # Q8_0 rounds each weight to a step of 1/127 of its 32-weight block's largest
        # magnitude, the step stored as a float16: off by at most ~0.56 of a step.
        step = np.abs(old.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
        assert np.all(np.abs(new - old).reshape(-1, 32) <= 0.6 * step + 1e-7)
        requantized += 1
    assert requantized > 100
    stamp = served_model.stat().st_mtime_ns
    assert prepare_model(served_model.parent.parent) == served_model
    assert served_model.stat().st_mtime_ns == stamp, "made once, then reused"


def test_a_model_that_cannot_be_written_is_served_as_shipped(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("a file where the models directory should be")
    assert prepare_model(tmp_path) == model_path()


async def test_smollm2_streams_a_real_reply(chat: ChatSystem) -> None:
    ws = await chat.ws("ada")
    await ws.start()
    await ws.say("Hello! Who are you?")
    reply = await ws.reply(timeout=60)
    deltas = [f["text"] for f in ws.frames if f["type"] == "text"]
    assert len(deltas) >= 2, "streamed in pieces"
    assert reply["text"].strip() and "".join(deltas) == reply["text"]
    assert reply["emotion"] in ("happy", "curious", "surprised", "thoughtful", "neutral")
    await asyncio.wait_for(ws.close(), 5)
