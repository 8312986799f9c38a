"""The benchmarks' instant model (bench/instant_llm.py) speaks the API as the SDK reads it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import openai
import pytest

from actors.llm import OpenAIChat
from bench.common import free_port
from bench.instant_llm import DEFAULT_TEXT, Connection, InstantModel, serve

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}]


@pytest.fixture
async def port() -> AsyncIterator[int]:
    number, ready = free_port(), asyncio.Event()
    server = asyncio.create_task(serve(number, ready=ready))
    await asyncio.wait_for(ready.wait(), 5)
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
    stream = await client.chat.completions.create(model='m "2"', messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    assert isinstance(stream, openai.AsyncStream)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_TEXT
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {'m "2"'} and len({c.id for c in chunks}) == 1
    with pytest.raises(openai.NotFoundError):
        await client.models.list()
    await client.close()


class _Transport(asyncio.Transport):
    """What the server writes back, without a socket in between."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _fed(*reads: bytes) -> bytes:
    """The server's answer to a connection whose bytes arrive in these reads."""
    connection, transport = Connection(InstantModel()), _Transport()
    connection.connection_made(transport)
    for data in reads:
        connection.data_received(data)
    return bytes(transport.out)


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def _request(body: bytes) -> bytes:
    return b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_requests_split_across_reads_or_read_together_are_each_answered() -> None:
    request = _request(json.dumps({"model": "m", "messages": MESSAGES}).encode())
    assert _fed(request[:10], request[10:50]) == b""  # not all of it yet
    answer = _fed(request[:10], request[10:50], request[50:])
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and DEFAULT_TEXT.encode() in answer
    assert _fed(request + request).count(b"HTTP/1.1 200 OK") == 2  # pipelined, in one read


async def test_bad_requests_get_the_apis_error_bodies(port: int) -> None:
    answer = await _exchange(port, _request(b"{not json"))
    assert answer.startswith(b"HTTP/1.1 400") and b'"invalid_request_error"' in answer
    answer = await _exchange(port, _request(b'{"model": "m"}'))  # no messages
    assert answer.startswith(b"HTTP/1.1 400")
    answer = await _exchange(port, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")
