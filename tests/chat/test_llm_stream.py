"""The model's event stream as servers really send it, read by ``actors.llm.Chunks`` under
the real openai SDK: events split anywhere across writes, CRLF and CR line ends, comments,
several ``data:`` lines in one event, an ``error`` event, a body that ends without
``[DONE]``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from actors.llm import LLMError, OpenAIChat
from tests.fakes.raw_server import RawServer, read_request


def event(content: str) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]}


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def chunked(*pieces: bytes) -> list[bytes]:
    """The writes of a chunked HTTP response carrying ``pieces``, one chunk each."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    return [head] + [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]


async def text_from(writes: list[bytes]) -> tuple[str, LLMError | None]:
    """What OpenAIChat makes of a server that answers with ``writes``, a moment apart."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for data in writes:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.002)

    async with RawServer(answer) as base:
        model = OpenAIChat(base + "/v1", "k", "m", timeout=5, max_retries=0)
        parts: list[str] = []
        error = None
        try:
            async for delta in model.stream([{"role": "user", "content": "hi"}]):
                parts.append(delta)
        except LLMError as exc:
            error = exc
        await model.close()
    return "".join(parts), error


async def test_events_split_anywhere_with_any_line_ends_and_comments_read_whole() -> None:
    one = b"data: " + json.dumps(event("Hello")).encode() + b"\r\n\r\n"
    two = b": a comment\rdata: " + json.dumps(event(", world")).encode() + b"\r\r"
    three = b"event: message\nid: 7\ndata: " + json.dumps(event("!")).encode() + b"\n\n"
    stream = one + two + three + b"data: [DONE]\r\n\r\n"
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]  # CRLFs split down the middle too
    text, error = await text_from(chunked(*pieces))
    assert (text, error) == ("Hello, world!", None)


async def test_an_event_whose_data_spans_lines_is_joined_with_newlines() -> None:
    body = json.dumps(event("two lines"), indent=1).encode()  # JSON across several data: lines
    lines = b"".join(b"data: " + line + b"\n" for line in body.split(b"\n"))
    text, error = await text_from(chunked(lines + b"\n", b"data: [DONE]\n\n"))
    assert (text, error) == ("two lines", None)


async def test_an_error_event_ends_the_stream_with_its_message_after_what_came_before() -> None:
    failure = {"error": {"message": "the model overheated", "type": "server_error"}}
    text, error = await text_from(
        chunked(
            b"data: " + json.dumps(event("Hel")).encode() + b"\n\n", b"data: " + json.dumps(failure).encode() + b"\n\n"
        )
    )
    assert text == "Hel"
    assert error is not None and error.code == "llm_stream_broken" and "the model overheated" in error.message


@pytest.mark.parametrize("ending", [b"", b"data: [DONE]\n\n"])
async def test_a_body_that_ends_with_or_without_done_ends_the_reply(ending: bytes) -> None:
    text, error = await text_from(chunked(sse(event("Bye.")), ending))
    assert (text, error) == ("Bye.", None)


async def test_a_body_cut_mid_event_is_a_broken_stream() -> None:
    writes = chunked(sse(event("Hi")))[:-1]  # no last chunk: cut
    writes.append(b'10\r\ndata: {"choi')
    text, error = await text_from(writes)
    assert text == "Hi"
    assert error is not None and error.code == "llm_stream_broken"


async def test_an_event_that_never_ends_is_a_broken_stream_not_a_growing_buffer() -> None:
    flood = [b"data: " + b"x" * 65536] + [b"y" * 65536] * 20  # 1.3 MB and no blank line
    text, error = await text_from(chunked(sse(event("Hi")), *flood))
    assert text == "Hi"
    assert error is not None and error.code == "llm_stream_broken" and "not a chat completion stream" in error.message
