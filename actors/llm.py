"""LLM provider adapter: any OpenAI-compatible endpoint through the official ``openai`` SDK.

The vendor SDK is imported here only. Provider failures become :class:`LLMError` with a
stable code the edge shows the user; nothing hangs: every request has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp
import httpx2
import openai
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._models import FinalRequestOptions

from actors.http1 import http_client

_T = TypeVar("_T")


class LLMError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class ToolCall:
    """A tool call assembled from streamed deltas."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class StreamResult:
    """Filled in while streaming: tool calls and the finish reason."""

    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None


class ChatModel(Protocol):
    def stream(
        self, messages: Sequence[dict[str, str]], *, model: str | None, temperature: float, max_tokens: int,
        result: StreamResult | None = None, tools: Sequence[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> AsyncIterator[str]: ...  # fmt: skip


async def complete(
    model: ChatModel, messages: Sequence[dict[str, str]], *, max_tokens: int = 400, temperature: float = 0.2,
    tools: Sequence[dict[str, Any]] | None = None, response_format: dict[str, Any] | None = None,
) -> tuple[str, StreamResult]:  # fmt: skip
    """The whole answer (text and tool calls) of one request."""
    result = StreamResult()
    parts = [
        delta
        async for delta in model.stream(
            messages, model=None, temperature=temperature, max_tokens=max_tokens, result=result, tools=tools,
            response_format=response_format,
        )
    ]  # fmt: skip
    return "".join(parts), result


async def close_stream(pieces: AsyncIterator[str]) -> None:
    """Close an async generator of pieces now (its ``finally`` runs here, not at GC); other
    iterators are left alone."""
    close = getattr(pieces, "aclose", None)
    if close is not None:
        await close()


async def coalesce(pieces: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """``pieces`` as they come, except that pieces which arrived together come as one.

    A fast provider (or a burst after a network stall) delivers many chunks in one read;
    each message downstream (bus, edge, browser, telemetry) costs more than the text it
    carries. The first piece is read in the consumer's own task and handed over at once;
    after it a reader task takes the rest, and what arrived while the consumer was busy is
    joined. Errors of ``pieces`` come after the text that preceded them.

    Reading the first piece in a task of its own cost a turn of the event loop before the
    first words could leave, spent on whatever else was queued (other actors' lanes, bus
    reads): 0.41 ms at the median in bench/chat.py's pipeline (100 sessions, 2026-11-23).
    """
    source = aiter(pieces)
    reader: asyncio.Task[None] | None = None
    try:
        try:
            first = await anext(source)
        except StopAsyncIteration:
            return
        yield first  # the first words leave before what came with them is read

        pending: list[str] = []
        ready = asyncio.Event()
        over = False

        async def read() -> None:
            nonlocal over
            try:
                async for piece in source:
                    pending.append(piece)
                    ready.set()
            finally:
                over = True
                ready.set()

        reader = asyncio.get_running_loop().create_task(read())
        while pending or not over:
            if not pending:
                ready.clear()
                await ready.wait()
                continue
            text = "".join(pending)
            pending.clear()
            yield text
        await reader  # its error, if any
    finally:
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
        await close_stream(source)  # stopped between pieces: the provider's stream ends now, not at GC


class LeanOpenAI(openai.AsyncOpenAI):
    """The SDK's client, building the one kind of request this module sends from a template.

    The SDK builds every request from scratch: it merges its headers, parses and joins the
    URL, merges the HTTP client's headers, cookies and query. For a chat completion that
    was ~40% of the CPU the SDK spent before the request left (bench/chat.py: 0.70 ms from
    the call to the request written, at the median, 2026-11-24). Here the first request of
    each shape (path, headers asked for, timeout, attempt) is built by the SDK, and later
    ones copy its method, URL, headers and extensions with their own body: byte for byte
    what the SDK would send (tests/chat/test_llm_lean.py). Anything else (a query, files,
    JSON left to the SDK to encode, cookies the server set) goes through the SDK as it is.
    What the SDK does around the build (retries, auth hooks, errors) is untouched. Alone
    against bench/instant_llm.py the call to the request written went from 0.36 to 0.14 ms
    at the median; in bench/chat.py the agent to the first delta from 1.60-1.87 to 1.49 ms.
    """

    MAX_TEMPLATES = 64

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._templates: dict[tuple[Any, ...], tuple[str, httpx2.URL, list[tuple[bytes, bytes]], dict[str, Any]]] = {}

    @property
    def user_agent(self) -> str:
        return f"AsyncOpenAI/Python {self._version}"  # the SDK names its class; this one is the SDK's client

    def _build_request(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> httpx2.Request:
        content, headers = options.content, options.headers
        if (
            not isinstance(content, bytes) or options.method != "post" or options.params or options.files is not None
            or options.json_data is not None or options.extra_json is not None or self._client.cookies
            or not isinstance(headers, dict | openai.NotGiven)
        ):  # fmt: skip
            return super()._build_request(options, retries_taken=retries_taken)
        asked = tuple(headers.items()) if isinstance(headers, dict) else ()
        key = (options.url, asked, repr(options.timeout), repr(options.security), retries_taken,
               options.idempotency_key if self._idempotency_header else None)  # fmt: skip
        template = self._templates.get(key)
        if template is None:
            request = super()._build_request(options, retries_taken=retries_taken)
            if len(self._templates) < self.MAX_TEMPLATES:
                kept = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
                self._templates[key] = (request.method, request.url, kept, dict(request.extensions))
            return request
        method, url, kept, extensions = template
        return httpx2.Request(method, url, headers=kept, content=content, extensions=dict(extensions))


class OpenAIChat:
    """Streams chat completions; text deltas are yielded, tool-call deltas assembled into ``result``."""

    def __init__(self, base_url: str, api_key: str, model: str, timeout: float, max_retries: int = 1) -> None:
        self.model = model
        self.host = urlsplit(base_url).netloc
        # Plain HTTP through our own lean transport, HTTPS through the SDK's aiohttp one: either
        # is ~0.5 ms less per request than the SDK's default (actors/http1.py, bench/chat.py).
        self._client = LeanOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
            http_client=http_client(base_url, timeout),
        )  # fmt: skip

    async def close(self) -> None:
        await self._client.close()

    async def stream(
        self, messages: Sequence[dict[str, str]], *, model: str | None = None, temperature: float = 0.7,
        max_tokens: int = 200, result: StreamResult | None = None, tools: Sequence[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> AsyncIterator[str]:  # fmt: skip
        result = result if result is not None else StreamResult()
        extra: dict[str, Any] = {"tools": list(tools)} if tools else {}
        if response_format:
            extra["response_format"] = response_format
        started = False  # once content flowed, a connection error means the stream broke
        try:
            # The client's public post() with the body already encoded and chunks left as
            # parsed JSON (``Chunks``): the typed create() re-validates the whole history on
            # every turn, and building a pydantic model per chunk costs more than the HTTP exchange.
            body = {"model": model or self.model, "messages": list(messages), "temperature": temperature,
                    "max_tokens": max_tokens, "stream": True, **extra}  # fmt: skip
            stream = await self._client.post(
                "/chat/completions", content=json.dumps(body).encode(), cast_to=object, stream=True,
                stream_cls=Chunks[object],
                options={"headers": {"Content-Type": "application/json"}, "security": {"bearer_auth": True}},
            )  # fmt: skip
            try:
                async for chunk in stream:
                    started = True
                    text = _absorb(chunk, result)
                    if text:
                        yield text
            finally:
                await stream.close()
        except LLMError:
            raise
        except openai.AuthenticationError:
            raise LLMError("llm_auth", "Model provider rejected our key (401): check OPENAI_API_KEY.") from None
        except openai.RateLimitError:
            raise LLMError("llm_rate_limited", "Model provider is rate limiting us (429); try again shortly.") from None
        except openai.APITimeoutError as exc:
            if _refused(exc):  # the aiohttp transport reports a refused connection as a connect timeout
                raise LLMError("llm_unavailable", "The language model cannot be reached.") from None
            raise LLMError("llm_timeout", "The language model did not answer in time.") from None
        except openai.APIConnectionError as exc:
            if started:
                raise LLMError("llm_stream_broken", f"The language model's answer broke off: {exc}") from None
            raise LLMError("llm_unavailable", "The language model cannot be reached.") from None
        except openai.APIStatusError as exc:
            raise LLMError("llm_error", f"The language model failed ({exc.status_code}).") from None
        except Exception as exc:  # a stream cut mid-way surfaces as the HTTP library's own error
            raise LLMError("llm_stream_broken", f"The language model's answer broke off: {exc}") from None


DRAIN = 0.1
"""Seconds the rest of a body is read after ``[DONE]``, so the connection can be reused."""
MAX_EVENT = 1 << 20
"""Bytes an event may reach before its end: a chat chunk is a few hundred."""


class Chunks(openai.AsyncStream[_T]):
    """The SDK's stream of ``data:`` events as parsed JSON, read with a plain parser.

    The SDK's decoder handles every event its APIs send (named events, the Assistants'
    ``thread.*`` ones); a chat completion sends only ``data:`` lines. Read with this instead
    of the SDK's line decoder and event objects, a 16-chunk reply from bench/instant_llm.py
    took 0.70-0.77 ms of CPU in all instead of 0.90, and 0.56-0.62 to its first chunk
    instead of 0.69 (2026-11-24).

    What the SDK does with them is kept: an event with an ``error`` is an ``APIError``,
    ``[DONE]`` ends the stream and the rest of the body is read (briefly) so the
    connection is reused, transport errors become ``APITimeoutError`` and
    ``APIConnectionError``.
    """

    async def __stream__(self) -> AsyncIterator[_T]:
        response = self.response
        events = _Events()
        try:
            async with contextlib.aclosing(response.aiter_bytes()) as body:
                async for data in body:
                    for payload in events.feed(data):
                        if payload.startswith(b"[DONE]"):
                            with contextlib.suppress(TimeoutError, *request_exceptions()):
                                async with asyncio.timeout(DRAIN):
                                    async for _ in body:
                                        pass
                            return
                        yield _chunk(payload, response.request)
                    if len(events.buffer) > MAX_EVENT:  # not an event stream: stop before it eats memory
                        message = f"an event over {MAX_EVENT} bytes long: this is not a chat completion stream"
                        raise openai.APIError(message, response.request, body=None)
        except timeout_exceptions() as exc:
            raise openai.APITimeoutError(request=response.request) from exc
        except request_exceptions() as exc:
            raise openai.APIConnectionError(request=response.request) from exc
        finally:
            await response.aclose()


class _Events:
    """Splits a byte stream into the data of its server-sent events."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The data of each event completed by ``data``."""
        buffer = self.buffer + data
        if b"\r" in buffer:  # CRLF or CR line ends; a CR last may be half of a CRLF
            held = buffer[-1:] == b"\r"
            buffer = (buffer[:-1] if held else buffer).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            buffer += b"\r" if held else b""
        payloads = []
        while (end := buffer.find(b"\n\n")) >= 0:
            payload = _data(buffer[:end])
            buffer = buffer[end + 2 :]
            if payload is not None:
                payloads.append(payload)
        self.buffer = buffer
        return payloads


def _chunk(payload: bytes, request: Any) -> Any:
    """One event's JSON; an event carrying an ``error`` is the SDK's ``APIError``."""
    chunk = json.loads(payload)
    if isinstance(chunk, dict) and chunk.get("error"):
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str) or not message:
            message = "An error occurred during streaming"
        raise openai.APIError(message, request, body=error)
    return chunk


def _data(event: bytes) -> bytes | None:
    """The data of one server-sent event (its ``data:`` lines joined), or None if it has none."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]  # the usual event: one data line
    data: list[bytes] = []
    for line in event.split(b"\n"):
        field, _, value = line.partition(b":")
        if field == b"data":
            data.append(value[1:] if value[:1] == b" " else value)
    return b"\n".join(data) if data else None


def _absorb(chunk: object, result: StreamResult) -> str:
    """One ``chat.completion.chunk``: assemble tool-call deltas into ``result``, return its text."""
    if not isinstance(chunk, dict):
        raise LLMError("llm_stream_broken", f"The language model sent a malformed chunk: {chunk!r:.200}")
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    if choice.get("finish_reason"):
        result.finish_reason = str(choice["finish_reason"])
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return ""
    for tc in delta.get("tool_calls") or ():
        index = int(tc.get("index", 0))
        while len(result.tool_calls) <= index:
            result.tool_calls.append(ToolCall())
        call = result.tool_calls[index]
        call.id = tc.get("id") or call.id
        function = tc.get("function")
        if isinstance(function, dict):
            call.name += function.get("name") or ""
            call.arguments += function.get("arguments") or ""
    content = delta.get("content")
    return content if isinstance(content, str) else ""


def _refused(exc: BaseException) -> bool:
    """Whether a connection refusal is somewhere in the cause chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError | aiohttp.ClientConnectorError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
