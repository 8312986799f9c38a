"""An instant OpenAI-compatible model for the benchmarks: the wire protocol, and nothing else.

``POST /v1/chat/completions`` answers as the API does: with ``stream: true``, a chunked
``text/event-stream`` of ``chat.completion.chunk`` events ending in ``data: [DONE]``;
without, one ``chat.completion``. Anything else gets the API's JSON error body (404, 400
for a body that is not a JSON object). HTTP/1.1 keep-alive, requests read one after the
other off each connection.

Why not ``tests.fakes.openai_server`` (aiohttp, scripted by tests): there a request cost
0.85 ms of CPU (aiohttp's request and response machinery, a ``json.dumps`` and a write
per chunk), on the 2 cores the system under test runs on, and a turn waited for it.
Here the reply's events are rendered once; a request costs reading its JSON and two
writes: the first word (as a model's first token leaves before the rest), then the rest
of the reply at once, as an instant model would send it.

Usage: python -m bench.instant_llm --port P [--text TEXT]   (prints READY when listening)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

DEFAULT_TEXT = "[happy] Hello there! I am glad you came. What shall we talk about?"
MAX_BODY = 8 << 20


def _event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {"id": "chatcmpl-{id}", "object": "chat.completion.chunk", "created": int(time.time()), "model": "{model}",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    """One piece of a chunked HTTP body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Reply:
    """The reply's events, rendered once; per request only the id and model change."""

    def __init__(self, text: str) -> None:
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        self.text = text
        self.first = _event({"role": "assistant", "content": ""}) + _event({"content": words[0]})
        self.rest = b"".join(_event({"content": w}) for w in words[1:]) + _event({}, "stop") + b"data: [DONE]\n\n"

    def stream(self, n: int, model: str) -> tuple[bytes, bytes]:
        def fill(events: bytes) -> bytes:
            return events.replace(b"{id}", b"%d" % n).replace(b"{model}", json.dumps(model)[1:-1].encode())

        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        return head + _chunk(fill(self.first)), _chunk(fill(self.rest)) + b"0\r\n\r\n"

    def whole(self, n: int, model: str) -> bytes:
        body = {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}  # fmt: skip
        return _response(200, body)


def _response(status: int, body: dict[str, Any]) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}[status]
    data = json.dumps(body).encode()
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status, reason.encode(), len(data), data,
    )  # fmt: skip


def _error(status: int, message: str) -> bytes:
    return _response(status, {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                        "code": None}})  # fmt: skip


class Connection(asyncio.Protocol):
    def __init__(self, server: InstantModel) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            fields = dict(line.split(":", 1) for line in head[1:] if ":" in line)
            length = int(next((v for k, v in fields.items() if k.strip().lower() == "content-length"), "0"))
            if length > MAX_BODY:
                self._close_with(_error(413, "request too large"))
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.server.answer(self.transport, head[0], body)

    def _close_with(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        self.transport.close()


class InstantModel:
    def __init__(self, text: str = DEFAULT_TEXT) -> None:
        self.reply = Reply(text)
        self.requests = 0

    def answer(self, transport: asyncio.Transport, request_line: str, body: bytes) -> None:
        method, path, _ = [*request_line.split(" "), "", ""][:3]
        if method != "POST" or path.split("?")[0] != "/v1/chat/completions":
            transport.write(_error(404, f"no route {method} {path}"))
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            transport.write(_error(400, "the body must be a JSON object with messages"))
            return
        self.requests += 1
        model = str(payload.get("model", "instant"))
        if payload.get("stream"):
            first, rest = self.reply.stream(self.requests, model)
            transport.write(first)
            transport.write(rest)
        else:
            transport.write(self.reply.whole(self.requests, model))


async def serve(port: int, text: str = DEFAULT_TEXT, ready: asyncio.Event | None = None) -> None:
    model = InstantModel(text)
    server = await asyncio.get_running_loop().create_server(lambda: Connection(model), "127.0.0.1", port)
    print("READY", flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--text", default=DEFAULT_TEXT)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.text))


if __name__ == "__main__":
    main()
