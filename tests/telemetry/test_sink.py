"""A chat turn becomes telemetry rows and a complete latency ledger; REST and /metrics show them."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgpack
from prometheus_client.parser import text_string_to_metric_families

from bus import Connection
from bus.codec import encode_parts
from bus.envelope import make_header
from bus.system import Ping
from bus.telemetry import MetricsSnapshot
from tests.chat.conftest import ChatSystem
from tests.helpers import Collector


async def settled(watch: Collector, where: Any = lambda b: True) -> MetricsSnapshot:
    """The sink's next snapshot with nothing left to write (and ``where`` true): what it saw is stored."""
    first = await watch.expect(MetricsSnapshot, lambda b: b.sink["buffered"] == 0 and where(b))
    n = sum(1 for e in watch.seen if isinstance(e.body, MetricsSnapshot))
    env = await watch.expect_n(MetricsSnapshot, n + 1)  # one more flush period has passed
    assert first
    return env[-1].body  # type: ignore[no-any-return]


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_a_chat_turn_is_recorded_with_its_latency_ledger(chat: ChatSystem) -> None:
    watch = Collector(chat.endpoints, ("telemetry.metrics",))
    await watch.start()
    ws = await chat.ws("ada")
    started = await ws.start()
    session = started["session_id"]
    await ws.say("Hello, how are you?")
    await ws.reply()
    await settled(watch, lambda b: b.histograms["total_ms"]["count"] >= 1)
    await watch.close()

    async with chat.http.get(f"{chat.url}/api/v1/telemetry/sessions/{session}") as resp:
        assert resp.status == 200
        detail = await resp.json()
    kinds = [e["type"] for e in detail["events"]]
    for kind in ("chat.user_text", "chat.accepted", "chat.turn", "chat.delta", "chat.reply",
                 "telemetry.mark"):  # fmt: skip
        assert kind in kinds, kind
    reply = next(e for e in detail["events"] if e["type"] == "chat.reply")
    assert reply["body"]["text"] == "Hello there! I am glad you came. What shall we talk about?"
    assert detail["session"]["character"] == "ada" and detail["session"]["kind"] == "chat"
    assert detail["session"]["events"] == len(detail["events"])
    [turn] = detail["turns"]
    assert turn["turn"] == 1 and turn["character"] == "ada" and turn["source"] == "ws"
    assert turn["provider"].startswith("smollm2@127.0.0.1:")
    hops = turn["hops"]
    assert set(hops) == {"user_input", "accepted", "llm_first_token", "first_sentence", "first_frame_sent",
                         "reply_end"}  # fmt: skip
    chain = [hops[h] for h in ("user_input", "accepted", "llm_first_token", "first_sentence", "reply_end")]
    assert chain == sorted(chain) and hops["user_input"] == 0  # each step after the one it depends on
    assert hops["first_frame_sent"] > hops["llm_first_token"]  # (the reply may be complete before it is sent)
    assert turn["ttft_ms"] == hops["llm_first_token"] and turn["total_ms"] == hops["reply_end"]

    async with chat.http.get(f"{chat.url}/api/v1/telemetry/sessions") as resp:
        listing = await resp.json()
    assert session in [s["session_id"] for s in listing["sessions"]]
    assert listing["latency"]["ttft_ms"]["n"] >= 1 and listing["latency"]["ttft_ms"]["p50"] > 0

    conn = await asyncpg.connect(chat.database_url)
    rows = await conn.fetch("SELECT header FROM telemetry_events WHERE session_id = $1", session)
    ids = [msgpack.unpackb(r["header"])["id"] for r in rows]
    await conn.close()
    assert len(ids) == len(set(ids))  # each message once (more may have come since the detail was read)
    assert {e["id"] for e in detail["events"]} <= set(ids)


async def test_metrics_parse_as_prometheus_text_and_move_with_traffic(chat: ChatSystem) -> None:
    watch = Collector(chat.endpoints, ("telemetry.metrics",))
    await watch.start()
    await settled(watch)
    async with chat.http.get(f"{chat.url}/metrics") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        before = metrics(await resp.text())
    ws = await chat.ws("ada")
    await ws.start()
    for text in ("One", "Two"):
        await ws.say(text)
        await ws.reply()
    await settled(watch, lambda b: b.histograms["total_ms"]["count"] >= 2)
    await watch.close()
    async with chat.http.get(f"{chat.url}/metrics") as resp:
        after = metrics(await resp.text())
    key = ("greenroom_bus_messages_total", (("type", "chat.user_text"),))
    assert after[key] - before.get(key, 0) == 2
    assert after[("greenroom_turn_total_ms_count", ())] - before.get(("greenroom_turn_total_ms_count", ()), 0) == 2
    assert after[("greenroom_ws_connections", ())] == 1
    assert after[("greenroom_telemetry_up", ())] == 1
    assert after[("greenroom_telemetry", (("stat", "db_up"),))] == 1
    assert (
        after[("greenroom_telemetry", (("stat", "written"),))] > before[("greenroom_telemetry", (("stat", "written"),))]
    )
    assert ("greenroom_process_stat", (("process", "character"), ("stat", "handled"))) in after
    assert after[("greenroom_telemetry", (("stat", "missed"),))] == 0  # nothing dropped on the way
    assert not any(name == "greenroom_bus_missed_total" for name, _ in after)
    # A sender's seq jumping from 1 to 4: two pings lost on the way, counted by type.
    sender = Connection(chat.endpoints, "gappy")
    await sender.start(lambda env, q: None, subscribe=[])
    for seq in (1, 4):
        header = make_header("diag.ping", session="", turn=0, parent=None, src="gappy@1", v=1, seq=seq)
        await sender.publish_raw(encode_parts(header, Ping("gap")))
    await sender.close()
    watch = Collector(chat.endpoints, ("telemetry.metrics",))
    await watch.start()
    await watch.expect(MetricsSnapshot, lambda b: b.missed.get("diag.ping") == 2)
    old = {id(e.body) for e in watch.seen}
    await watch.expect(MetricsSnapshot, lambda b: id(b) not in old)  # one more: the edge has it too by now
    await watch.close()
    async with chat.http.get(f"{chat.url}/metrics") as resp:
        gaps = metrics(await resp.text())
    assert gaps[("greenroom_bus_missed_total", (("type", "diag.ping"),))] == 2
    assert gaps[("greenroom_telemetry", (("stat", "missed"),))] == 2
    assert after[("greenroom_sessions_active", ())] >= 1
