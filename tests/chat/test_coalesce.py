"""Pieces of a reply that arrive together go downstream as one; paced ones one by one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from actors.character import shown
from actors.llm import LLMError, OpenAIChat, coalesce
from brain.emotion import TagReader
from tests.fakes.openai_server import Behaviour, FakeOpenAI

WORDS = [f"w{i} " for i in range(8)]


async def burst(fail: bool = False) -> AsyncIterator[str]:
    """Every piece at once, as a provider's read with many chunks in it gives them."""
    for word in WORDS:
        yield word
    if fail:
        raise LLMError("llm_stream_broken", "cut")


async def endless(closed: list[bool]) -> AsyncIterator[str]:
    """A provider still generating after its first words; ``closed`` is told when it is closed."""
    try:
        yield "first "
        await asyncio.Event().wait()  # never set
        yield "never"
    finally:
        closed.append(True)


async def paced(gap: asyncio.Event) -> AsyncIterator[str]:
    for word in WORDS:
        await gap.wait()  # the next piece comes only after the consumer took the last one
        gap.clear()
        yield word


async def test_pieces_that_came_together_go_as_one_after_the_first() -> None:
    out = [piece async for piece in coalesce(burst())]
    assert out == [WORDS[0], "".join(WORDS[1:])]


async def test_the_first_piece_reaches_the_consumer_before_anything_else_queued_runs() -> None:
    ran: list[str] = []

    async def first_words() -> AsyncIterator[str]:
        asyncio.get_running_loop().call_soon(ran.append, "other work")  # what a busy loop has queued
        yield "first "
        yield "rest"

    async with contextlib.aclosing(coalesce(first_words())) as pieces:
        assert await anext(pieces) == "first " and ran == []  # no turn of the loop in between
        assert [p async for p in pieces] == ["rest"]
    assert ran == ["other work"]


async def test_the_first_visible_words_come_first_the_emotion_tag_taken_off_before() -> None:
    tags = TagReader(["happy"])
    ran: list[str] = []
    closed: list[bool] = []

    async def model() -> AsyncIterator[str]:
        try:
            asyncio.get_running_loop().call_soon(ran.append, "other work")
            for piece in ("[hap", "py] ", "Hello ", "there", "!"):
                yield piece
        finally:
            closed.append(True)

    async with contextlib.aclosing(coalesce(shown(model(), tags))) as pieces:
        assert await anext(pieces) == "Hello " and ran == [] and tags.emotion == "happy"
        assert [p async for p in pieces] == ["there!"]
    assert closed == [True]


async def test_an_empty_reply_is_nothing_and_an_error_before_any_text_comes_at_once() -> None:
    async def reply(words: list[str], error: LLMError | None = None) -> AsyncIterator[str]:
        for word in words:
            yield word
        if error is not None:
            raise error

    assert [p async for p in coalesce(reply([]))] == []
    with pytest.raises(LLMError, match="down"):
        [p async for p in coalesce(reply([], LLMError("llm_unavailable", "down")))]


async def test_pieces_that_come_apart_go_apart() -> None:
    gap = asyncio.Event()
    gap.set()
    out = []
    async for piece in coalesce(paced(gap)):
        out.append(piece)
        gap.set()
    assert out == WORDS


async def test_an_error_comes_after_the_text_before_it() -> None:
    out: list[str] = []
    with pytest.raises(LLMError, match="cut"):
        async for piece in coalesce(burst(fail=True)):
            out.append(piece)
    assert "".join(out) == "".join(WORDS)


async def test_stopping_early_closes_the_providers_stream() -> None:
    closed: list[bool] = []

    async with contextlib.aclosing(coalesce(endless(closed))) as pieces:
        async for piece in pieces:
            assert piece == "first "
            break
    assert closed == [True]


async def test_a_cancelled_consumer_cancels_the_read() -> None:
    closed: list[bool] = []
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in coalesce(endless(closed)):
            got_first.set()

    task = asyncio.create_task(consume())
    await got_first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True]


async def test_through_the_sdk_an_instant_reply_is_two_pieces_and_a_paced_one_streams(fake_llm: FakeOpenAI) -> None:
    model = OpenAIChat(fake_llm.base_url, "k", "m", timeout=5)
    text = "one two three four five six"
    fake_llm.script.extend([Behaviour(text=text), Behaviour(text=text, delay=0.02)])
    instant = [p async for p in coalesce(model.stream([{"role": "user", "content": "hi"}]))]
    streamed = [p async for p in coalesce(model.stream([{"role": "user", "content": "hi"}]))]
    assert "".join(instant) == "".join(streamed) == text
    assert instant[0] == "one " and len(instant) < 6  # the first word, then what came with it
    assert streamed == [w + " " for w in text.split()[:-1]] + ["six"]
    await model.close()
