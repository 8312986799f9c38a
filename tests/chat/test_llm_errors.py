"""Provider failures become clear error frames; the session goes on. Uses the real openai SDK."""

from __future__ import annotations

import pytest

from actors.llm import LLMError, OpenAIChat, StreamResult
from tests.chat.conftest import ChatSystem
from tests.conftest import free_tcp_base
from tests.fakes.openai_server import Behaviour, FakeOpenAI


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        (Behaviour(kind="status", status=401), "llm_auth"),
        (Behaviour(kind="status", status=429), "llm_rate_limited"),
        (Behaviour(kind="status", status=500), "llm_error"),
        (Behaviour(kind="broken", after=3), "llm_stream_broken"),
    ],
)
async def test_provider_errors_reach_the_user_and_the_session_goes_on(
    chat: ChatSystem, behaviour: Behaviour, code: str
) -> None:
    chat.llm.script.extend([behaviour, behaviour])  # the SDK retries once
    ws = await chat.ws()
    await ws.start()
    await ws.say("hello")
    error = await ws.expect("error")
    assert error["code"] == code and error["message"]
    await ws.expect(lambda f: f.get("status") == "idle")
    chat.llm.script.clear()
    await ws.say("and now?")
    reply = await ws.reply()
    assert reply["text"].startswith("Hello there")
    await ws.close()


async def test_a_hanging_provider_times_out(chat: ChatSystem) -> None:
    chat.llm.script.extend([Behaviour(kind="hang"), Behaviour(kind="hang")])
    ws = await chat.ws()
    await ws.start()
    await ws.say("hello")
    assert (await ws.expect("error", timeout=20))["code"] == "llm_timeout"
    await ws.close()


async def test_unreachable_provider_is_reported() -> None:
    model = OpenAIChat(f"http://127.0.0.1:{free_tcp_base(1)}/v1", "k", "m", timeout=2, max_retries=0)
    with pytest.raises(LLMError) as info:
        async for _ in model.stream([{"role": "user", "content": "hi"}]):
            pass
    assert info.value.code == "llm_unavailable"
    await model.close()


async def test_tool_call_deltas_are_assembled(fake_llm: FakeOpenAI) -> None:
    fake_llm.script.append(Behaviour(kind="tool_call"))
    model = OpenAIChat(fake_llm.base_url, "k", "m", timeout=5)
    result = StreamResult()
    text = [d async for d in model.stream([{"role": "user", "content": "tides?"}], result=result)]
    assert text == []
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [("call_1", "lookup", '{"q": "tides"}')]
    await model.close()


async def test_a_malformed_chunk_is_a_broken_stream(fake_llm: FakeOpenAI) -> None:
    fake_llm.script.append(Behaviour(kind="garbage"))
    model = OpenAIChat(fake_llm.base_url, "k", "m", timeout=5)
    text: list[str] = []
    with pytest.raises(LLMError) as info:
        async for delta in model.stream([{"role": "user", "content": "hi"}]):
            text.append(delta)
    assert text == ["Hello"]  # what came before is kept
    assert info.value.code == "llm_stream_broken" and "malformed chunk" in info.value.message
    await model.close()
