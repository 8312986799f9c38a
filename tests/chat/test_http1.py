"""The lean HTTP/1.1 transport the SDK uses for http:// model servers, against real servers:
aiohttp's (a well-behaved HTTP/1.1 server) and raw sockets scripted byte by byte for what
servers do wrong or unkindly (closing idle connections, cutting bodies, not speaking HTTP)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import openai
import pytest
from aiohttp import web

from actors.http1 import HIGH_WATER, Http1Transport, http_client
from actors.llm import OpenAIChat
from tests.conftest import free_tcp_base
from tests.fakes.local_server import LocalServer
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.raw_server import RawServer, read_request

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=Http1Transport(), timeout=5) as c:
        yield c


@pytest.fixture
async def app_server() -> AsyncIterator[LocalServer]:
    server = LocalServer()
    yield server
    await server.close()


async def test_a_chunked_body_arrives_piece_by_piece_as_the_server_sends_it(
    app_server: LocalServer, client: httpx2.AsyncClient
) -> None:
    go_on = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await go_on.wait()
        await response.write(b"data: second\n\n")
        await response.write_eof()
        return response

    app_server.app.router.add_post("/s", stream)
    await app_server.start()
    async with client.stream("POST", f"http://127.0.0.1:{app_server.port}/s", content=b"{}") as response:
        assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
        parts = response.aiter_raw()
        assert await anext(parts) == b"data: first\n\n"  # before the server sent the rest
        go_on.set()
        assert b"".join([p async for p in parts]) == b"data: second\n\n"


async def test_connections_are_kept_alive_and_reused(app_server: LocalServer, client: httpx2.AsyncClient) -> None:
    peers: list[object] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response({"got": (await request.read()).decode(), "path": request.path_qs})

    app_server.app.router.add_post("/echo", echo)
    await app_server.start()
    url = f"http://127.0.0.1:{app_server.port}/echo?x=1"
    for i in range(3):
        response = await client.post(url, content=f"body {i}".encode())
        assert response.json() == {"got": f"body {i}", "path": "/echo?x=1"}
    assert len(peers) == 3 and len(set(peers)) == 1  # one connection for all three


async def test_a_gzipped_body_is_decoded(app_server: LocalServer, client: httpx2.AsyncClient) -> None:
    async def zipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b"hello " * 1000), headers={"Content-Encoding": "gzip"})

    app_server.app.router.add_get("/z", zipped)
    await app_server.start()
    response = await client.get(f"http://127.0.0.1:{app_server.port}/z")
    assert response.content == b"hello " * 1000


async def test_a_body_larger_than_the_read_buffer_arrives_whole(
    app_server: LocalServer, client: httpx2.AsyncClient
) -> None:
    big = bytes(range(256)) * (3 * HIGH_WATER // 256 + 7)

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=big)

    app_server.app.router.add_get("/big", large)
    await app_server.start()
    async with client.stream("GET", f"http://127.0.0.1:{app_server.port}/big") as response:
        got = bytearray()
        async for part in response.aiter_raw():
            got += part
            await asyncio.sleep(0.001)  # a slow reader: the socket pauses and resumes
    assert got == big


async def test_an_idle_connection_the_server_closed_is_replaced_without_an_error(client: httpx2.AsyncClient) -> None:
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # answers as if keeping the connection, then closes it
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    raw = RawServer(one_per_connection)
    async with raw as base:
        for _ in range(3):
            response = await client.get(base + "/")
            assert response.text == "ok"
            await asyncio.sleep(0.05)  # the close reaches us while the connection is idle...
        assert raw.connections == 3


async def test_a_connection_the_server_closes_as_the_request_arrives_is_retried_once(
    client: httpx2.AsyncClient,
) -> None:
    served = 0

    async def close_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while True:
            await read_request(reader)
            served += 1
            if served == 2:
                return  # read the request, closed without a word: a keep-alive race
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    raw = RawServer(close_the_second)
    async with raw as base:
        assert (await client.get(base + "/")).text == "ok"
        assert (await client.get(base + "/")).text == "ok"  # on a new connection
        assert raw.connections == 2


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.1 response"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel", "before the whole body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n", "longer than its size"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "in the response head"),
        (b"", "without a response"),
    ],
)
async def test_what_is_not_http_or_is_cut_short_is_a_protocol_error(
    client: httpx2.AsyncClient, answer: bytes, error: str
) -> None:
    async def say(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async with RawServer(say) as base:
        with pytest.raises(httpx2.RemoteProtocolError, match=error):
            await client.get(base + "/")


async def test_a_body_that_runs_to_the_end_of_the_connection_is_read_whole(client: httpx2.AsyncClient) -> None:
    raw_requests: list[bytes] = []

    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw_requests.append(await read_request(reader))
        writer.write(b"HTTP/1.0 200 OK\r\nX-Old: yes\r\n\r\nall of ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"it")
        await writer.drain()

    raw = RawServer(old_style)
    async with raw as base:
        for _ in range(2):
            response = await client.post(base + "/p?q=a%20b", content=b"payload", headers={"X-Mine": "1"})
            assert response.text == "all of it" and response.headers["x-old"] == "yes"
        assert raw.connections == 2  # never reused
    head, _, body = raw_requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /p?q=a%20b HTTP/1.1" and body == b"payload"
    assert {b"x-mine: 1", b"content-length: 7"} <= {line.lower() for line in lines}
    assert any(line.lower().startswith(b"host: 127.0.0.1:") for line in lines)


async def test_1xx_responses_are_skipped(client: httpx2.AsyncClient) -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew")
        await writer.drain()

    async with RawServer(early_hints) as base:
        response = await client.get(base + "/")
        assert (response.status_code, response.text, response.reason_phrase) == (201, "new", "Created")


async def test_a_silent_server_is_a_read_timeout_and_a_closed_port_a_connect_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with httpx2.AsyncClient(transport=Http1Transport(), timeout=0.3) as client:
        async with RawServer(silent) as base:
            with pytest.raises(httpx2.ReadTimeout):
                await client.get(base + "/")
        with pytest.raises(httpx2.ConnectError, match="cannot connect"):
            await client.get(f"http://127.0.0.1:{free_tcp_base(1)}/")


async def test_a_stream_closed_half_way_closes_its_connection_and_the_next_request_gets_a_new_one(
    app_server: LocalServer, client: httpx2.AsyncClient
) -> None:
    peers: list[object] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(3):
            await response.write(b"x" * 10)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    app_server.app.router.add_get("/e", endless)
    await app_server.start()
    url = f"http://127.0.0.1:{app_server.port}/e"
    async with client.stream("GET", url) as response:
        assert await anext(response.aiter_raw()) == b"x" * 10  # and then we stop reading
    assert (await client.get(url)).content == b"x" * 30
    assert len(set(peers)) == 2


async def test_only_plain_http_is_spoken_and_https_providers_keep_the_sdks_transport() -> None:
    async with httpx2.AsyncClient(transport=Http1Transport()) as client:
        with pytest.raises(httpx2.UnsupportedProtocol):
            await client.get("https://127.0.0.1:1/")
    plain, tls = http_client("http://127.0.0.1:8080/v1", 5), http_client("https://api.openai.com/v1", 5)
    assert isinstance(plain._transport, Http1Transport)
    assert isinstance(tls, openai.DefaultAioHttpClient) and not isinstance(tls._transport, Http1Transport)
    await plain.aclose()
    await tls.aclose()


async def test_the_sdk_streams_over_it_and_reuses_one_connection() -> None:
    peers: set[object] = set()

    @web.middleware
    async def note_peer(request: web.Request, handler: Handler) -> web.StreamResponse:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return await handler(request)

    fake_llm = FakeOpenAI()
    fake_llm.app.middlewares.append(note_peer)
    await fake_llm.start()
    model = OpenAIChat(fake_llm.base_url, "k", "m", timeout=5)
    try:
        for _ in range(3):
            text = "".join([d async for d in model.stream([{"role": "user", "content": "hi"}])])
            assert text.startswith("[happy] Hello there!")
        assert len(peers) == 1 and len(fake_llm.requests) == 3
    finally:
        await model.close()
        await fake_llm.close()
