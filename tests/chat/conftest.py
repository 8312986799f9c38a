"""The chat stack, all real: broker, actors, embedded PostgreSQL, the edge on a TCP port,
the official openai SDK against a protocol-faithful local server."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from actors import Actor, Host
from actors.character import CharacterAgent
from actors.db.pg import start_embedded
from actors.echo import Echo
from actors.orchestrator import Orchestrator
from actors.session import SessionManager
from bus import Broker, Endpoints
from config.settings import settings
from tests.fakes.openai_server import FakeOpenAI
from web.app import create_app


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One embedded PostgreSQL for the whole run."""
    root = Path(tempfile.mkdtemp(prefix="grpg-", dir="/tmp"))
    server, url = start_embedded(root)
    yield url
    server.cleanup()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def database_url(pg_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test."""
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(pg_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    parts = urlsplit(pg_url)
    yield urlunsplit(parts._replace(path="/" + name))
    conn = await asyncpg.connect(pg_url)
    await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await conn.close()


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.close()


class WS:
    """A browser-like WebSocket client that keeps every frame and waits for the one it needs."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._cursor = 0
        self.greeting: dict[str, Any] | None = None

    async def send(self, obj: Any) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def expect(self, where: Callable[[dict[str, Any]], bool] | str, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame (after the last one expected) that matches; frames before it are kept."""
        pred = (lambda f: f.get("type") == where) if isinstance(where, str) else where

        async def scan() -> dict[str, Any]:
            while True:
                for i in range(self._cursor, len(self.frames)):
                    if pred(self.frames[i]):
                        self._cursor = i + 1
                        return self.frames[i]
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"socket closed: {msg.type} {msg.data!r} {msg.extra!r}")
                self.frames.append(json.loads(msg.data))

        return await asyncio.wait_for(scan(), timeout)

    async def start(self, **fields: Any) -> dict[str, Any]:
        await self.send({"action": "start_session", "input_type": "text", "new_session": True, **fields})
        status = await self.expect(lambda f: f.get("type") == "status" and "session_id" in f)
        if not status["resumed"]:
            self.greeting = await self.expect("transcript")
        return status

    async def say(self, text: str) -> None:
        await self.send({"action": "stream_data", "input_type": "text", "data": text})

    async def reply(self, timeout: float = 10.0) -> dict[str, Any]:
        return await self.expect(lambda f: f.get("type") == "transcript" and f["speaker"] == "assistant", timeout)

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class ChatSystem:
    url: str
    endpoints: Endpoints
    llm: FakeOpenAI
    http: aiohttp.ClientSession
    database_url: str
    hosts: list[Host]
    app: web.Application

    async def ws(self, character: str = "ada") -> WS:
        return WS(await self.http.ws_connect(f"{self.url}/ws/{character}"))


@pytest.fixture
def llm_base_url(fake_llm: FakeOpenAI) -> str:
    """Where the character agent's model lives; a test module may point it elsewhere."""
    return fake_llm.base_url


@pytest.fixture
def more_actors() -> list[type[Actor]]:
    """Actors of one more host next to the chat ones (the voice tests add theirs)."""
    return []


@pytest.fixture
async def chat(
    *, monkeypatch: pytest.MonkeyPatch, short_tmp: Path, database_url: str, fake_llm: FakeOpenAI, llm_base_url: str,
    more_actors: list[type[Actor]],
) -> AsyncIterator[ChatSystem]:  # fmt: skip
    endpoints = Endpoints(f"ipc://{short_tmp}/bus")
    for var, value in {
        "GREENROOM_BUS": endpoints.events_out,
        "GREENROOM_DATA_DIR": str(short_tmp),
        "DATABASE_URL": database_url,
        "OPENAI_BASE_URL": llm_base_url,
        "OPENAI_API_KEY": "test-key",
        "GREENROOM_LLM_TIMEOUT": "3",
        "GREENROOM_HEARTBEAT": "0.2",
    }.items():
        monkeypatch.setenv(var, value)
    settings.cache_clear()
    with Broker(endpoints):
        hosts = [Host(endpoints, [SessionManager, Orchestrator]), Host(endpoints, [CharacterAgent]),
                 Host(endpoints, [Echo])]  # fmt: skip
        if more_actors:
            hosts.append(Host(endpoints, more_actors))
        for host in hosts:
            await host.start()
        required = [name for host in hosts for name in host.actor_names]
        app = create_app(settings(), required=required)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        async with aiohttp.ClientSession() as http:
            url = str(server.make_url("")).rstrip("/")
            yield ChatSystem(url, endpoints, fake_llm, http, database_url, hosts, app)
        await server.close()
        for host in hosts:
            await host.stop()
    settings.cache_clear()
