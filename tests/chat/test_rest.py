"""REST: characters, one-shot chat (store, route, answer, store, return), history, health."""

from __future__ import annotations

import asyncpg
from aiohttp.test_utils import TestServer

from bus import type_prefix
from bus.system import Heartbeat
from config.settings import settings
from tests.chat.conftest import ChatSystem
from tests.helpers import Collector
from web.app import create_app


async def test_characters_lists_at_least_three(chat: ChatSystem) -> None:
    async with chat.http.get(f"{chat.url}/api/characters") as resp:
        cards = await resp.json()
    assert resp.status == 200 and len(cards) >= 3
    assert {"name", "display_name", "greeting", "voice", "emotions"} <= set(cards[0])


async def test_chat_message_stores_both_sides_and_returns_the_answer(chat: ChatSystem) -> None:
    async with chat.http.post(f"{chat.url}/api/v1/chat/message", json={"character": "sage", "text": "hi"}) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    assert body["reply"]["text"].startswith("Hello there") and body["reply"]["emotion"] == "happy"
    session = body["session_id"]
    async with chat.http.post(
        f"{chat.url}/api/v1/chat/message", json={"character": "sage", "text": "again", "session_id": session}
    ) as resp:
        second = await resp.json()
    assert second["session_id"] == session and second["turn"] == 2
    conn = await asyncpg.connect(chat.database_url)
    rows = await conn.fetch("SELECT speaker, content FROM messages WHERE session_id=$1 ORDER BY timestamp", session)
    await conn.close()
    assert [(r["speaker"], r["content"][:5]) for r in rows] == [
        ("assistant", "Welco"), ("user", "hi"), ("assistant", "Hello"), ("user", "again"), ("assistant", "Hello"),
    ]  # fmt: skip
    async with chat.http.get(f"{chat.url}/api/v1/sessions/{session}/messages") as resp:
        history = await resp.json()
    assert [m["content"] for m in history["messages"]] == [r["content"] for r in rows]


async def test_bad_requests_are_clear(chat: ChatSystem) -> None:
    cases = [
        (b"not json", 400, "bad_json"),
        (b'{"character": "nobody", "text": "x"}', 404, "unknown_character"),
        (b'{"character": "ada", "text": ""}', 400, "bad_text"),
        (b'{"character": "ada", "text": "a\\u0000b"}', 400, "bad_text"),  # PostgreSQL refuses NUL
        (b'{"character": "ada", "text": "x", "session_id": 5}', 400, "bad_session"),
        (b'{"character": "ada", "text": "x", "session_id": "s-nope"}', 404, "no_session"),
    ]
    for data, status, code in cases:
        async with chat.http.post(f"{chat.url}/api/v1/chat/message", data=data) as resp:
            body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (status, code), data
    async with chat.http.get(f"{chat.url}/api/v1/sessions/s-nope/messages") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "no_session"
    for path in ("/api/v1/sessions/s-nope/messages", "/api/v1/telemetry/sessions", "/api/v1/telemetry/sessions/x"):
        async with chat.http.get(f"{chat.url}{path}?limit=many") as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_limit", path


async def test_provider_failure_is_a_502_with_the_code(chat: ChatSystem) -> None:
    from tests.fakes.openai_server import Behaviour

    chat.llm.script.extend([Behaviour(kind="status", status=401)] * 2)
    async with chat.http.post(f"{chat.url}/api/v1/chat/message", json={"character": "ada", "text": "x"}) as resp:
        body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "llm_auth"


async def test_healthz_waits_for_every_actor(chat: ChatSystem) -> None:
    watcher = Collector(chat.endpoints, (type_prefix("sys.heartbeat"),))
    await watcher.start()
    required = {"session", "orchestrator", "character", "echo"}
    # two rounds of heartbeats from every actor: the edge has certainly seen the first
    await watcher.expect_n(Heartbeat, 2 * len(required), lambda b: bool(required & set(b.actors)))
    async with chat.http.get(f"{chat.url}/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["missing"] == []
    lonely = TestServer(create_app(settings(), required=["session", "nobody"]), host="127.0.0.1")
    await lonely.start_server()
    async with chat.http.get(lonely.make_url("/healthz")) as resp:
        assert resp.status == 503  # nothing heard yet
    from_session = lambda b: "session" in b.actors  # noqa: E731
    seen = watcher.count(Heartbeat, from_session)
    await watcher.expect_n(Heartbeat, seen + 2, from_session)  # later session heartbeats reached it too
    async with chat.http.get(lonely.make_url("/healthz")) as resp:
        body = await resp.json()
    assert resp.status == 503 and body["missing"] == ["nobody"]
    await lonely.close()
    await watcher.close()
