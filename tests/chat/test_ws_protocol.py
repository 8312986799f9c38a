"""The seeds/003 protocol: every action, and bad input that gets a clear error and loses nothing."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.chat.conftest import ChatSystem


async def test_ping_and_bus_ping(chat: ChatSystem) -> None:
    ws = await chat.ws()
    await ws.send({"action": "ping"})
    assert await ws.expect("pong") == {"type": "pong"}
    await ws.send({"action": "bus_ping"})
    pong = await ws.expect("pong")
    assert pong["via"] == "bus" and pong["rtt_ms"] > 0
    await ws.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("this is not json", "bad_json"),
        ("[1, 2, 3]", "bad_frame"),
        ({"no": "action"}, "bad_frame"),
        ({"action": 42}, "bad_frame"),
        ({"action": "dance"}, "unknown_action"),
        ({"action": "stream_data", "input_type": "text", "data": "hi"}, "no_session"),
        ({"action": "end_session"}, "no_session"),
        ({"action": "start_session", "input_type": "video"}, "bad_input_type"),
        ({"action": "start_session", "new_session": "yes"}, "bad_frame"),
        ("x" * (65 * 1024), "too_large"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_lives(chat: ChatSystem, frame: Any, code: str) -> None:
    ws = await chat.ws()
    await ws.send(frame)
    error = await ws.expect("error")
    assert error["code"] == code and error["message"]
    await ws.send({"action": "ping"})
    await ws.expect("pong")  # still alive
    await ws.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"action": "stream_data", "input_type": "text", "data": ""}, "bad_data"),
        ({"action": "stream_data", "input_type": "text", "data": 5}, "bad_data"),
        ({"action": "stream_data", "input_type": "text", "data": "x" * 5000}, "too_large"),
        ({"action": "stream_data", "input_type": "audio", "data": "AAAA"}, "not_audio_session"),
        ({"action": "stream_data", "data": "hi"}, "bad_input_type"),
    ],
)
async def test_bad_stream_data_in_a_session(chat: ChatSystem, frame: Any, code: str) -> None:
    ws = await chat.ws()
    await ws.start()
    await ws.send(frame)
    assert (await ws.expect("error"))["code"] == code
    await ws.say("still here?")
    assert (await ws.reply())["text"]  # the session goes on
    await ws.close()


async def test_binary_frames_are_refused_clearly(chat: ChatSystem) -> None:
    ws = await chat.ws()
    await ws.ws.send_bytes(b"\x00\x01")
    assert (await ws.expect("error"))["code"] == "binary_not_supported"
    await ws.close()


async def test_unknown_character_is_a_404(chat: ChatSystem) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await chat.http.ws_connect(f"{chat.url}/ws/nobody")
    assert info.value.status == 404


async def test_end_session_then_a_new_one(chat: ChatSystem) -> None:
    ws = await chat.ws()
    first = (await ws.start())["session_id"]
    await ws.send({"action": "end_session"})
    assert (await ws.expect(lambda f: f.get("status") == "ended"))["type"] == "status"
    await ws.send({"action": "stream_data", "input_type": "text", "data": "hello?"})
    assert (await ws.expect("error"))["code"] == "no_session"
    second = (await ws.start())["session_id"]
    assert second != first
    await ws.close()


async def test_resume_with_a_foreign_or_unknown_session_starts_fresh(chat: ChatSystem) -> None:
    ws = await chat.ws("ada")
    ada_session = (await ws.start())["session_id"]
    other = await chat.ws("grimm")
    status = await other.start(new_session=False, session_id=ada_session)  # another character's session
    assert status["resumed"] is False and status["session_id"] != ada_session
    status = await other.start(new_session=False, session_id="s-doesnotexist")
    assert status["resumed"] is False
    await ws.close()
    await other.close()


async def test_frames_are_json_text(chat: ChatSystem) -> None:
    ws = await chat.ws()
    await ws.send({"action": "ping"})
    msg = await ws.ws.receive()
    assert msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data) == {"type": "pong"}
    await ws.close()


async def test_a_failing_session_service_gives_an_error_frame_not_a_dead_socket(chat: ChatSystem) -> None:
    manager = chat.hosts[0].actors[0]

    async def broken(character: str) -> str:
        raise ConnectionError("database went away")

    manager.store.create_session = broken  # type: ignore[attr-defined]
    ws = await chat.ws()
    await ws.send({"action": "start_session", "input_type": "text", "new_session": True})
    error = await ws.expect("error")
    assert error["code"] == "session_unavailable" and "database went away" in error["message"]
    await ws.send({"action": "ping"})
    await ws.expect("pong")
    async with chat.http.post(f"{chat.url}/api/v1/chat/message", json={"character": "ada", "text": "hi"}) as resp:
        body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "session_unavailable"
    await ws.close()
