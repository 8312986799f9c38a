"""OpenTelemetry export: with OTEL_EXPORTER_OTLP_ENDPOINT set, each turn reaches an OTLP/HTTP
collector as one span with a child span per hop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.chat.conftest import ChatSystem
from tests.fakes.otlp_server import FakeCollector


@pytest.fixture
async def collector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeCollector]:
    server = FakeCollector()
    await server.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    yield server
    await server.close()


@pytest.fixture
def more_actors(collector: FakeCollector) -> list[type]:  # the sink must start after the endpoint is set
    from actors.telemetry import TelemetrySink

    return [TelemetrySink]


async def test_a_turn_is_exported_as_a_span_with_a_child_per_hop(chat: ChatSystem, collector: FakeCollector) -> None:
    ws = await chat.ws("ada")
    session = (await ws.start())["session_id"]
    await ws.say("What makes a rainbow?")
    await ws.reply()

    async def turn_span() -> dict[str, Any]:
        while True:
            found = [s for s in collector.spans if s["name"] == "turn"]
            if found:
                return found[0]
            collector.arrived.clear()
            await collector.arrived.wait()

    turn = await asyncio.wait_for(turn_span(), 15)
    assert turn["service"] == "greenroom"
    attrs = turn["attributes"]
    assert attrs["greenroom.session"] == session and attrs["greenroom.turn"] == 1
    assert attrs["greenroom.character"] == "ada" and attrs["greenroom.ttft_ms"] > 0
    children = [s for s in collector.spans if s["parent"] == turn["id"]]
    names = [c["name"] for c in sorted(children, key=lambda c: c["end"])]
    hops = {"user_input", "accepted", "llm_first_token", "first_sentence", "first_frame_sent", "reply_end"}
    assert hops <= set(names)
    inside = [turn["start"] <= c["start"] <= c["end"] <= turn["end"] for c in children]
    assert all(c["trace"] == turn["trace"] for c in children) and all(inside)
    await ws.close()
