"""The sink's hot path: topics (type|session) are read once and cached, and gaps in each
sender's ``seq`` (messages the bus dropped on their way) are counted, not hidden."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgpack
import pytest

from actors import Host, telemetry
from actors.telemetry import TelemetrySink
from bus import Broker, Connection, Endpoints
from bus.codec import encode_parts
from bus.envelope import make_header
from bus.system import Ping
from bus.telemetry import MetricsSnapshot
from config.settings import settings
from tests.helpers import Collector


async def one_more(watch: Collector) -> None:
    """The next metrics snapshot (not one already seen)."""
    old = {id(e.body) for e in watch.seen}
    await watch.expect(MetricsSnapshot, lambda b: id(b) not in old)


async def test_sessions_beyond_the_topic_cache_are_each_stored_as_their_own(
    sink: tuple[Endpoints, Any, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(telemetry, "MAX_ROUTES", 7)
    endpoints, _, url = sink
    watch = Collector(endpoints, ("telemetry.metrics",))
    await watch.start()
    sender = Connection(endpoints, "sender")
    await sender.start(lambda env, q: None, subscribe=[])
    sent = [(f"topics-{i % 23}", i) for i in range(500)]  # 23 sessions through a cache of 7, round and round
    for session, i in sent:
        await sender.publish(Ping(f"m{i}"), session=session)
    await watch.expect(MetricsSnapshot, lambda b: b.messages.get("diag.ping", 0) >= 500 and b.sink["buffered"] == 0)
    await one_more(watch)  # one more flush period
    await sender.close()
    await watch.close()
    conn = await asyncpg.connect(url)
    rows = await conn.fetch("SELECT session_id, type, body FROM telemetry_events WHERE session_id LIKE 'topics-%'")
    sessions = await conn.fetch("SELECT session_id, events FROM telemetry_sessions WHERE session_id LIKE 'topics-%'")
    await conn.close()
    got = sorted((r["session_id"], int(msgpack.unpackb(r["body"])["text"][1:])) for r in rows)
    assert got == sorted(sent)
    assert {r["type"] for r in rows} == {"diag.ping"}
    per_session = {f"topics-{k}": len(range(k, 500, 23)) for k in range(23)}
    assert {r["session_id"]: r["events"] for r in sessions} == per_session


async def test_messages_the_bus_dropped_on_the_way_are_counted_as_missed(
    sink: tuple[Endpoints, Any, str],
) -> None:
    """A slow subscriber loses messages at the broker; the sink sees that as gaps in each
    sender's per-type ``seq`` and reports them (``missed``), next to what it stored."""
    endpoints, _, url = sink
    watch = Collector(endpoints, ("telemetry.metrics",))
    await watch.start()
    sender = Connection(endpoints, "gappy")
    await sender.start(lambda env, q: None, subscribe=[])
    sent = 0
    for first, n in ((1, 10), (200, 5), (300, 5), (70_000, 5), (2**32 + 5, 3)):  # seq sizes: fixint … uint64
        for seq in range(first, first + n):
            if seq % 4 == 0:
                continue  # "dropped by the broker"
            header = make_header("diag.ping", session="gaps", turn=0, parent=None, src=sender.src, v=1, seq=seq)
            await sender.publish_raw(encode_parts(header, Ping(f"m{seq}")))
            sent += 1
    for seq in (1, 2, 5):  # a client in another language, its header keys in another order: 2 missed
        header = make_header("diag.ping", session="gaps", turn=0, parent=None, src="other@1", v=1, seq=seq)
        topic, _, body = encode_parts(header, Ping(f"o{seq}"))
        await sender.publish_raw([topic, msgpack.packb(dict(reversed(header.to_wire().items()))), body])
        sent += 1
    long_src = "long-sender-" + "x" * 60 + "@abc123"  # headers of varying length, nothing dropped: 0 missed
    for seq in range(1, 7):
        parent = "p" * 40 if seq % 2 else None
        header = make_header("diag.ping", session="gaps", turn=0, parent=parent, src=long_src, v=1, seq=seq)
        await sender.publish_raw(encode_parts(header, Ping(f"l{seq}")))
        sent += 1
    # expected gaps: inside each run (every 4th), and between runs (a run starts after its predecessor)
    runs = [range(1, 11), range(200, 205), range(300, 305), range(70_000, 70_005), range(2**32 + 5, 2**32 + 8)]
    kept = [s for r in runs for s in r if s % 4]
    expected = sum(b - a - 1 for a, b in itertools.pairwise(kept)) + 2
    snap = await watch.expect(MetricsSnapshot, lambda b: b.messages.get("diag.ping", 0) >= sent)
    final = await watch.expect(MetricsSnapshot, lambda b: b.sink["missed"] >= expected and b.sink["buffered"] == 0)
    await one_more(watch)  # a write in flight when that snapshot was taken is done by the next
    await sender.close()
    await watch.close()
    assert snap
    assert final.body.sink["missed"] == expected
    assert final.body.missed == {"diag.ping": expected}
    conn = await asyncpg.connect(url)
    stored = await conn.fetchval("SELECT count(*) FROM telemetry_events WHERE session_id = 'gaps'")
    await conn.close()
    assert stored == sent


@pytest.fixture
async def tight(
    monkeypatch: pytest.MonkeyPatch,
    short_tmp: Path,
    own_pg: tuple[Any, str],
) -> AsyncIterator[tuple[Endpoints, Host, str]]:
    """A sink behind a broker (and a tap socket) that hold only a few hundred messages for it."""
    endpoints = Endpoints(f"ipc://{short_tmp}/bus")
    monkeypatch.setenv("GREENROOM_BUS", endpoints.events_out)
    monkeypatch.setenv("DATABASE_URL", own_pg[1])
    monkeypatch.setattr(telemetry, "TAP_HWM", 300)
    settings.cache_clear()
    with Broker(endpoints, hwm=300):
        host = Host(endpoints, [TelemetrySink])
        await host.start()
        yield endpoints, host, own_pg[1]
        await host.stop()
    settings.cache_clear()


async def test_a_sink_that_falls_behind_counts_what_the_broker_dropped_for_it(
    tight: tuple[Endpoints, Host, str],
) -> None:
    """Every message sent is stored or counted as missed: none is lost silently."""
    endpoints, host, url = tight
    actor = host.actors[0]
    assert isinstance(actor, TelemetrySink)
    watch = Collector(endpoints, ("telemetry.metrics",))
    await watch.start()
    sender = Connection(endpoints, "burst")
    await sender.start(lambda env, q: None, subscribe=[])
    actor._tap.pause_events()  # the sink stops reading: its queues fill, then the broker drops
    for i in range(5000):
        await sender.publish(Ping(f"b{i}"), session="burst")
    old = {id(e.body) for e in watch.seen}
    actor._tap.resume_events()
    await watch.expect(MetricsSnapshot, lambda b: id(b) not in old and b.messages.get("diag.ping", 0) > 0)
    await sender.publish(Ping("b5000"), session="burst")  # the next one shows the gap
    snap = await watch.expect(
        MetricsSnapshot,
        lambda b: b.messages.get("diag.ping", 0) + b.missed.get("diag.ping", 0) >= 5001 and b.sink["buffered"] == 0,
    )
    await one_more(watch)
    await sender.close()
    await watch.close()
    conn = await asyncpg.connect(url)
    stored = await conn.fetchval("SELECT count(*) FROM telemetry_events WHERE session_id = 'burst'")
    await conn.close()
    missed = snap.body.missed["diag.ping"]  # (heartbeats dropped meanwhile are counted under their own type)
    assert missed > 3000  # the queues held a few hundred of them
    assert stored + missed == 5001
