"""Plain HTTP/1.1 for the openai SDK: a lean httpx transport on asyncio.

The SDK sends every request through an httpx client. With its aiohttp transport a
streamed chat request took 1.04-1.10 ms of CPU to its first chunk, measured alone
against bench/instant_llm.py; aiohttp's request machinery (and the second request object
it builds from httpx's) was ~0.3 ms of that, where the exchange itself, on a bare socket,
takes ~0.1 ms. This transport writes the request in one write and parses the response
itself: status line and headers, then the body by ``Content-Length``, chunked, or to the
end of the connection. Connections are kept alive and reused. Content-Encoding is left
to httpx, which decodes the body. With it the same request takes 0.77 ms to its first
chunk, and bench/chat.py's model request (agent -> first delta) went from 2.57 to 2.21
ms at the median (2026-11-24).

It speaks ``http://`` only: the embedded model on loopback, Ollama, vLLM, a model server
on the LAN. ``https://`` providers keep the SDK's aiohttp transport (TLS, proxies).

Errors are httpx's own, as the SDK expects them: ``ConnectError`` (refused),
``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError`` (the server cut the response
or sent something that is not HTTP/1.1), ``ReadError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2

MAX_HEAD = 64 << 10
"""Bytes of status line and headers a response may have."""
MAX_IDLE = 100
"""Idle connections kept per server."""
KEEPALIVE = 4.0
"""Seconds an idle connection is kept (servers commonly close them after 5)."""
HIGH_WATER = 1 << 20
"""Unread bytes after which reading from the socket pauses."""


class _Connection(asyncio.Protocol):
    """One TCP connection: what arrived, and a future to wait for more."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def usable(self) -> bool:
        return not self.eof and self.transport is not None and not self.transport.is_closing() and not self.buffer

    def take(self, n: int) -> bytes:
        """Up to ``n`` buffered bytes, removed from the buffer."""
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self.paused and len(self.buffer) <= HIGH_WATER // 4 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def more(self, timeout: float | None) -> None:
        """Wait until more bytes arrive (or the connection ends); ``ReadTimeout`` after ``timeout``."""
        if self.eof:
            return
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx2.ReadTimeout("the server sent nothing in the read timeout"))


class _Body(httpx2.AsyncByteStream):
    """A response body as it arrives; the connection goes back to the pool once it is read."""

    def __init__(
        self, owner: Http1Transport, key: tuple[str, int], conn: _Connection, *, length: int | None,
        chunked: bool, keep: bool, timeout: float | None,
    ) -> None:  # fmt: skip
        self._owner, self._key, self._conn = owner, key, conn
        self._length, self._chunked, self._keep, self._timeout = length, chunked, keep, timeout
        self._done = False
        self._closed = False
        self._parts: AsyncIterator[bytes] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The body from where the last reader stopped (the SDK stops at ``[DONE]`` and drains
        the rest with a second reader)."""
        if self._parts is None:
            if self._closed:
                raise httpx2.StreamClosed()
            self._parts = self._read()
        async for part in self._parts:
            yield part

    async def _read(self) -> AsyncIterator[bytes]:
        if self._chunked:
            parts = self._chunks()
        elif self._length is not None:
            parts = self._sized(self._length)
        else:
            parts = self._to_end()
        async for part in parts:
            if self._closed:
                raise httpx2.StreamClosed()
            yield part
        self._done = True
        self._release()

    async def _sized(self, remaining: int) -> AsyncIterator[bytes]:
        conn = self._conn
        while remaining:
            if not conn.buffer:
                if conn.eof:
                    raise _cut(conn, "the server closed the connection before the whole body was sent")
                await conn.more(self._timeout)
                continue
            data = conn.take(remaining)
            remaining -= len(data)
            yield data

    async def _to_end(self) -> AsyncIterator[bytes]:
        conn = self._conn
        self._keep = False
        while True:
            if conn.buffer:
                yield conn.take(len(conn.buffer))
            elif conn.eof:
                if conn.error is not None:
                    raise httpx2.ReadError(str(conn.error)) from conn.error
                return
            else:
                await conn.more(self._timeout)

    async def _chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            line = await _line(conn, self._timeout, "a chunk's size")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx2.RemoteProtocolError(f"bad chunk size {size_text[:40]!r}") from None
            if size < 0:
                raise httpx2.RemoteProtocolError(f"bad chunk size {size_text[:40]!r}")
            if size == 0:
                while await _line(conn, self._timeout, "the trailers"):  # trailers, up to the empty line
                    pass
                return
            async for data in self._sized(size):  # a chunk's data leaves as it arrives
                yield data
            if await _line(conn, self._timeout, "a chunk's end"):
                raise httpx2.RemoteProtocolError("a chunk is longer than its size says")

    def _release(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._done and self._keep:
            self._owner._put(self._key, self._conn)
        else:
            self._conn.close()

    async def aclose(self) -> None:
        self._release()  # not read to the end: the rest is still on the wire, the connection goes


class Http1Transport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 over plain TCP with keep-alive (``http://`` URLs only)."""

    def __init__(self, *, max_idle: int = MAX_IDLE, keepalive: float = KEEPALIVE) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._max_idle = max_idle
        self._keepalive = keepalive
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx2.UnsupportedProtocol(f"this transport speaks http:// only, not {url.scheme}://")
        key = (url.host, url.port or 80)
        timeout: dict[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = timeout.get("read")
        try:
            content = request.content
        except httpx2.RequestNotRead:
            content = await request.aread()
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        head.extend(b"%s: %s\r\n" % kv for kv in request.headers.raw)
        head.append(b"\r\n")
        data = b"".join(head) + content
        while True:
            conn, reused = self._get(key)
            if conn is None:
                conn = await self._connect(key, timeout.get("connect"))
            try:
                assert conn.transport is not None
                conn.transport.write(data)
                response = await self._response(request, key, conn, read_timeout)
            except _Stale:
                conn.close()
                if reused:
                    continue  # the server closed it while it was idle: once more on a new one
                raise httpx2.RemoteProtocolError("the server closed the connection without a response") from None
            except BaseException:
                conn.close()
                raise
            return response

    async def _response(
        self, request: httpx2.Request, key: tuple[str, int], conn: _Connection, timeout: float | None
    ) -> httpx2.Response:
        while True:
            status, reason, headers, version = await _head(conn, timeout)
            if status >= 200 or status == 101:
                break  # 1xx (100 Continue, 103 Early Hints) come before the real response
        length: int | None = None
        chunked = False
        close = version == b"HTTP/1.0"
        for name, value in headers:
            lower = name.lower()
            if lower == b"transfer-encoding":
                chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
            elif lower == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise httpx2.RemoteProtocolError(f"bad Content-Length {value[:40]!r}") from None
                if length < 0:
                    raise httpx2.RemoteProtocolError(f"bad Content-Length {value[:40]!r}")
            elif lower == b"connection":
                tokens = value.lower()
                close = b"close" in tokens or (version == b"HTTP/1.0" and b"keep-alive" not in tokens)
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            length, chunked = 0, False
        if chunked:
            length = None
        elif length is None:
            close = True  # the body runs to the end of the connection
        body = _Body(self, key, conn, length=length, chunked=chunked, keep=not close, timeout=timeout)
        extensions = {"http_version": version, "reason_phrase": reason}
        return httpx2.Response(status, headers=headers, stream=body, request=request, extensions=extensions)

    async def _connect(self, key: tuple[str, int], timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Connection(loop), key[0], key[1])
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"no connection to {key[0]}:{key[1]} in {timeout} s") from None
        except OSError as exc:
            raise httpx2.ConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc}") from exc
        return conn

    def _get(self, key: tuple[str, int]) -> tuple[_Connection | None, bool]:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable and now - conn.idle_since < self._keepalive:
                return conn, True
            conn.close()
        return None, False

    def _put(self, key: tuple[str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if self._closed or not conn.usable or len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _Stale(Exception):
    """The connection ended before a single byte of the response."""


def _cut(conn: _Connection, what: str) -> httpx2.RemoteProtocolError:
    error = httpx2.RemoteProtocolError(what)
    error.__cause__ = conn.error
    return error


async def _line(conn: _Connection, timeout: float | None, what: str) -> bytes:
    """One CRLF-ended line of a chunked body, without its end."""
    while True:
        end = conn.buffer.find(b"\r\n")
        if end >= 0:
            line = conn.take(end + 2)
            return line[:-2]
        if len(conn.buffer) > MAX_HEAD:
            raise httpx2.RemoteProtocolError(f"{what} is too long")
        if conn.eof:
            raise _cut(conn, f"the server closed the connection in {what}")
        await conn.more(timeout)


async def _head(conn: _Connection, timeout: float | None) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    """Status, reason, headers and version of the next response on ``conn``."""
    start = 0
    while True:
        end = conn.buffer.find(b"\r\n\r\n", start)
        if end >= 0:
            break
        if len(conn.buffer) > MAX_HEAD:
            raise httpx2.RemoteProtocolError(f"the response head is over {MAX_HEAD} bytes")
        if conn.eof:
            if not conn.buffer:
                raise _Stale()
            raise _cut(conn, "the server closed the connection in the response head")
        start = max(0, len(conn.buffer) - 3)
        await conn.more(timeout)
    lines = conn.take(end + 4)[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise httpx2.RemoteProtocolError(f"not an HTTP/1.1 response: {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise httpx2.RemoteProtocolError(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers, parts[0]


def http_client(base_url: str, timeout: float) -> Any:
    """The httpx client the SDK should use for ``base_url``: this transport for ``http://``,
    the SDK's aiohttp transport otherwise."""
    import openai

    if base_url.lower().startswith("http://"):
        return openai.DefaultAsyncHttpxClient(transport=Http1Transport(), timeout=timeout)
    return openai.DefaultAioHttpClient(timeout=timeout)
