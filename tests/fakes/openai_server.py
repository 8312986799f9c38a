"""A local OpenAI-compatible server speaking the real wire protocol, scripted by tests.

``POST /v1/chat/completions`` with ``stream: true`` answers with ``text/event-stream``
``chat.completion.chunk`` events and ``data: [DONE]``, exactly as the API does; errors
come as the API's JSON error bodies with their status codes. Each request takes the
next scripted behaviour (or the default reply) and is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.local_server import LocalServer


@dataclass
class Behaviour:
    kind: str = "text"
    """text | status | broken | tool_call | hang | garbage (a chunk that is JSON but not a chunk)"""
    text: str = "[happy] Hello there! I am glad you came. What shall we talk about?"
    delay: float = 0.0
    """Seconds between chunks."""
    status: int = 200
    after: int = 2
    """For ``broken``: chunks sent before the connection is cut."""
    tool: dict[str, Any] = field(default_factory=lambda: {"name": "lookup", "arguments": '{"q": "tides"}'})


class FakeOpenAI(LocalServer):
    def __init__(self) -> None:
        super().__init__()
        self.script: deque[Behaviour] = deque()
        self.default = Behaviour()
        self.router: Callable[[dict[str, Any]], Behaviour | None] | None = None
        """Picks a request's behaviour from its content (before the script); None: not routed."""
        self.requests: list[dict[str, Any]] = []
        self.app.router.add_post("/v1/chat/completions", self._completions)
        self._closing = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def close(self) -> None:
        self._closing.set()  # scripted hangs end
        await super().close()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.requests.append({"body": payload, "auth": request.headers.get("Authorization", "")})
        routed = self.router(payload) if self.router is not None else None
        b = routed or (self.script.popleft() if self.script else self.default)
        if b.kind == "status":
            kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(b.status, "server_error")
            code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(b.status)
            body = {"error": {"message": f"scripted {b.status}", "type": kind, "param": None, "code": code}}
            return web.json_response(body, status=b.status, headers={"retry-after-ms": "10"})
        if b.kind == "hang":
            await self._closing.wait()  # never answers while the test runs
        if not payload.get("stream"):
            return web.json_response(self._completion(payload, b.text))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        cid, model = f"chatcmpl-{len(self.requests)}", payload.get("model", "fake")

        async def event(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}  # fmt: skip
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await event({"role": "assistant", "content": ""})
        if b.kind == "garbage":
            await event({"content": "Hello"})
            await resp.write(b'data: ["not", "a", "chunk"]\n\n')
            await resp.write(b"data: [DONE]\n\n")
            return resp
        if b.kind == "tool_call":
            args = b.tool["arguments"]
            await event({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                         "function": {"name": b.tool["name"], "arguments": ""}}]})  # fmt: skip
            for i in range(0, len(args), 5):
                await event({"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + 5]}}]})
            await event({}, "tool_calls")
            await resp.write(b"data: [DONE]\n\n")
            return resp
        words = [w + " " for w in b.text.split(" ")]
        words[-1] = words[-1].rstrip()
        for i, word in enumerate(words):
            if b.kind == "broken" and i == b.after:
                assert request.transport is not None
                request.transport.close()  # cut mid-stream, no terminating chunk
                return resp
            if b.delay:
                await asyncio.sleep(b.delay)
            await event({"content": word})
        await event({}, "stop")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    @staticmethod
    def _completion(payload: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-x", "object": "chat.completion", "created": int(time.time()),
            "model": payload.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }  # fmt: skip


class _Forgetful(list[dict[str, Any]]):
    """A benchmark's server keeps no record of its requests."""

    def append(self, item: dict[str, Any]) -> None:
        pass


def main() -> None:
    """``python -m tests.fakes.openai_server --port P``: an instant local model for benchmarks."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--replies", help='JSON {system prompt start: text or {"text", "delay"}}: answers by what is asked'
    )
    args = parser.parse_args()
    replies: dict[str, Behaviour] = {
        start: Behaviour(text=r) if isinstance(r, str) else Behaviour(text=r["text"], delay=float(r.get("delay", 0)))
        for start, r in (json.loads(args.replies) if args.replies else {}).items()
    }

    def route(payload: dict[str, Any]) -> Behaviour | None:
        system = str(payload["messages"][0].get("content", "")) if payload.get("messages") else ""
        return next((b for start, b in replies.items() if system.startswith(start)), None)

    async def serve() -> None:
        server = FakeOpenAI()
        server.router = route
        server.requests = _Forgetful()
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print("READY", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
