"""The benchmarks' instant model (bench/instant_llm.py) speaks the API as the SDK reads it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import openai
import pytest

from actors.llm import OpenAIChat
from bench.common import free_port
from bench.instant_llm import DEFAULT_TEXT, serve

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}]


@pytest.fixture
async def port() -> AsyncIterator[int]:
    number = free_port()
    server = asyncio.create_task(serve(number))
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", number)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.02)
    yield number
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)


async def test_the_sdk_streams_and_completes_the_reply(port: int) -> None:
    chat = OpenAIChat(f"http://127.0.0.1:{port}/v1", "key", "m", timeout=5)
    try:
        for _ in range(3):  # one kept-alive connection, request after request
            assert "".join([d async for d in chat.stream(MESSAGES)]) == DEFAULT_TEXT
    finally:
        await chat.close()
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="key")
    whole = await client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert whole.choices[0].message.content == DEFAULT_TEXT and whole.model == "m"
    stream = await client.chat.completions.create(model="m2", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    assert isinstance(stream, openai.AsyncStream)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_TEXT
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"m2"} and len({c.id for c in chunks}) == 1
    with pytest.raises(openai.NotFoundError):
        await client.models.list()
    await client.close()


async def _exchange(port: int, *pieces: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def _request(body: bytes) -> bytes:
    return b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def test_requests_split_across_reads_or_sent_together_are_each_answered(port: int) -> None:
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    split = _request(body)
    answer = await _exchange(port, split[:10], split[10:50], split[50:])
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and DEFAULT_TEXT.encode() in answer
    answers = await _exchange(port, _request(body) + _request(body))  # pipelined in one write
    assert answers.count(b"HTTP/1.1 200 OK") == 2


async def test_bad_requests_get_the_apis_error_bodies(port: int) -> None:
    answer = await _exchange(port, _request(b"{not json"))
    assert answer.startswith(b"HTTP/1.1 400") and b'"invalid_request_error"' in answer
    answer = await _exchange(port, _request(b'{"model": "m"}'))  # no messages
    assert answer.startswith(b"HTTP/1.1 400")
    answer = await _exchange(port, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")
