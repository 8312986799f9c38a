"""``actors.llm.LeanOpenAI`` sends what the openai SDK sends: its requests built from a
template are, on the wire, the SDK's own requests with their own body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
from openai._models import FinalRequestOptions

from actors.http1 import http_client
from actors.llm import LeanOpenAI, OpenAIChat
from tests.fakes.raw_server import RawServer, read_request

DONE = b"data: [DONE]\n\n"
CHUNK = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}


def stream_response() -> bytes:
    body = b"data: " + json.dumps(CHUNK).encode() + b"\n\n" + DONE
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def too_many() -> bytes:
    body = json.dumps({"error": {"message": "slow down", "type": "rate_limit", "param": None, "code": None}}).encode()
    return (
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nretry-after-ms: 10\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


class Recorder:
    """A server that answers each request on a connection in turn, recording them whole."""

    def __init__(self, answers: list[bytes] | None = None) -> None:
        self.requests: list[tuple[bytes, bytes]] = []
        self.answers = answers or []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                raw = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            head, _, body = raw.partition(b"\r\n\r\n")
            self.requests.append((head, body))
            writer.write(self.answers.pop(0) if self.answers else stream_response())
            await writer.drain()


def head_lines(head: bytes) -> list[bytes]:
    """The request line and headers, each as sent; the body's length apart (bodies differ)."""
    return sorted(line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length:"))


async def chat(client: Any, text: str) -> None:
    stream = await client.post(
        "/chat/completions", content=json.dumps({"messages": [{"role": "user", "content": text}]}).encode(),
        cast_to=object, stream=True, stream_cls=openai.AsyncStream[object],
        options={"headers": {"Content-Type": "application/json"}, "security": {"bearer_auth": True}},
    )  # fmt: skip
    async for _ in stream:
        pass


async def test_requests_from_a_template_are_the_sdks_own_with_their_own_body() -> None:
    recorder = Recorder()
    async with RawServer(recorder) as base:
        lean = LeanOpenAI(base_url=base + "/v1", api_key="k1", max_retries=0, http_client=http_client(base, 5))
        sdk = openai.AsyncOpenAI(base_url=base + "/v1", api_key="k1", max_retries=0, http_client=http_client(base, 5))
        for text in ("first", "second, from the template", "third"):
            await chat(lean, text)
        await chat(sdk, "the SDK alone")
        await lean.close()
        await sdk.close()
    assert len(lean._templates) == 1  # the first request made it; the next two were copies
    heads = [head_lines(head) for head, _ in recorder.requests]
    assert heads[0] == heads[1] == heads[2] == heads[3]
    assert b"authorization: bearer k1" in [line.lower() for line in heads[1]]
    bodies = [json.loads(body)["messages"][0]["content"] for _, body in recorder.requests]
    assert bodies == ["first", "second, from the template", "third", "the SDK alone"]
    for head, body in recorder.requests:  # each request says its own body's length
        assert f"content-length: {len(body)}".encode() in head.lower()


async def test_a_retry_is_built_as_the_sdk_builds_it_with_its_attempt_number() -> None:
    recorder = Recorder([too_many(), stream_response(), too_many(), stream_response()])
    async with RawServer(recorder) as base:
        lean = LeanOpenAI(base_url=base + "/v1", api_key="k1", max_retries=1, http_client=http_client(base, 5))
        await chat(lean, "one")
        await chat(lean, "two")  # both attempts from templates now
        await lean.close()
    counts = [
        line.split(b":", 1)[1].strip()
        for head, _ in recorder.requests
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-stainless-retry-count")
    ]
    assert counts == [b"0", b"1", b"0", b"1"]
    assert len(lean._templates) == 2


async def test_the_character_agents_model_requests_go_through_the_template() -> None:
    recorder = Recorder()
    async with RawServer(recorder) as base:
        model = OpenAIChat(base + "/v1", "k2", "m", timeout=5, max_retries=0)
        for text in ("hi", "again"):
            assert [d async for d in model.stream([{"role": "user", "content": text}])] == ["Hi"]
        assert isinstance(model._client, LeanOpenAI) and len(model._client._templates) == 1
        await model.close()
    assert head_lines(recorder.requests[0][0]) == head_lines(recorder.requests[1][0])
    assert [json.loads(body)["messages"][0]["content"] for _, body in recorder.requests] == ["hi", "again"]


async def test_requests_of_another_shape_are_left_to_the_sdk() -> None:
    lean = LeanOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", http_client=http_client("http://127.0.0.1:9", 5))
    shapes: list[dict[str, Any]] = [
        {"json_data": {"a": 1}},  # JSON the SDK encodes
        {"content": b"{}", "params": {"q": "1"}},  # a query
        {"files": [("f", b"x")]},  # a file
        {"content": b"{}", "method": "get"},
    ]
    for shape in shapes:
        options = FinalRequestOptions.construct(**{"method": "post", "url": "/chat/completions", **shape})
        request = lean._build_request(options)
        assert request.url.path == "/v1/chat/completions"
    assert lean._templates == {}
    await lean.close()
