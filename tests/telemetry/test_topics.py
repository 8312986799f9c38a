"""The sink reads each topic (type|session) once and caches it: with more sessions than the
cache holds, every message is still stored under its own session and type, once."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgpack
import pytest

from actors import telemetry
from bus import Connection, Endpoints
from bus.system import Ping
from bus.telemetry import MetricsSnapshot
from tests.helpers import Collector
from tests.telemetry.test_outage import own_pg, sink  # noqa: F401


async def test_sessions_beyond_the_topic_cache_are_each_stored_as_their_own(
    sink: tuple[Endpoints, Any, str],  # noqa: F811
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
    old = {id(e.body) for e in watch.seen}
    await watch.expect(MetricsSnapshot, lambda b: id(b) not in old)  # one more flush period
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
