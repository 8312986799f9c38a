"""The embedded SmolLM2 model, for real: a streamed, non-empty reply through the whole stack."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from actors.llm_server import start_server, warm
from tests.chat.conftest import ChatSystem
from tests.conftest import free_tcp_base


@pytest.fixture(scope="module")
def smollm() -> Iterator[str]:
    port = free_tcp_base(1)
    server: Any = start_server(port, n_ctx=2048, parallel=2)
    url = f"http://127.0.0.1:{port}/v1"
    assert asyncio.run(warm(url, 2)) == 2  # as the llm actor does before it says it is ready
    yield url
    del server


@pytest.fixture
def llm_base_url(smollm: str) -> str:
    return smollm


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
