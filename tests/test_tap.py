"""Taps in another process see everything, in order; record and replay reproduce traffic."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
import zmq

from actors import Host
from actors.echo import Echo
from bus import Broker, Connection, Endpoints
from bus.system import Ping, Pong
from tests.helpers import Collector, read_until, spawn, stop


@pytest.fixture
async def echo(broker: Endpoints) -> AsyncIterator[Host]:
    host = Host(broker, [Echo])
    await host.start()
    yield host
    await host.stop()


async def scripted_exchange(endpoints: Endpoints, n: int = 10) -> list[str]:
    """Ask echo n times on two sessions; return the ids of every message, in causal order."""
    conn = Connection(endpoints, "script")
    await conn.start()
    ids: list[str] = []
    for i in range(n):
        reply = await conn.ask(Ping(f"q{i}", b"\x00" * 320), reply=Pong, session="A" if i % 2 else "B", turn=i)
        assert reply.header.parent is not None
        ids += [reply.header.parent, reply.id]
    await conn.close()
    return ids


async def test_tap_in_another_process_sees_every_message_in_order(broker: Endpoints, echo: Host) -> None:
    tap = await spawn("--bus", broker.events_out, "tap", "diag.", "--json")
    await read_until(tap.stderr, "tap: listening")
    ids = await scripted_exchange(broker)
    lines = []
    assert tap.stdout is not None
    for _ in ids:
        lines.append(json.loads(await asyncio.wait_for(tap.stdout.readline(), 10)))
    await stop(tap)
    assert [line["header"]["id"] for line in lines] == ids
    pongs = [line for line in lines if line["header"]["type"] == "diag.pong"]
    assert all(p["latency_ms"] is not None and p["latency_ms"] >= 0 for p in pongs)
    assert lines[0]["body"]["payload"] == {"bin": 320}  # payloads shown by size, never dumped


async def test_tap_filters_by_session_and_prints_readable_lines(broker: Endpoints, echo: Host) -> None:
    tap = await spawn("--bus", broker.events_out, "tap", "diag.ping", "--session", "A")
    await read_until(tap.stderr, "tap: listening")
    await scripted_exchange(broker, n=4)
    assert tap.stdout is not None
    lines = [(await asyncio.wait_for(tap.stdout.readline(), 10)).decode() for _ in range(2)]
    await stop(tap)
    rest = (await tap.stdout.read()).decode()
    assert all("diag.ping" in line and " A " in line and "payload=<320B>" in line for line in lines)
    assert rest == "", f"other sessions or types leaked through: {rest!r}"


async def test_tap_shows_undecodable_traffic(broker: Endpoints) -> None:
    tap = await spawn("--bus", broker.events_out, "tap")
    await read_until(tap.stderr, "tap: listening")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    foreign = ctx.socket(zmq.XPUB)
    foreign.connect(broker.events_in)
    foreign.RCVTIMEO = 5000
    while foreign.recv() != b"\x01":
        pass
    foreign.send_multipart([b"junk|", b"\xc1", b""])
    line = await read_until(tap.stdout, "undecodable")
    assert "header is not valid msgpack" in line[-1]
    foreign.close(0)
    await stop(tap)


async def test_record_then_replay_reproduces_the_session(short_tmp: Path) -> None:
    first = Endpoints(f"ipc://{short_tmp}/one")
    file = short_tmp / "session.grec"
    with Broker(first):
        host = Host(first, [Echo])
        await host.start()
        rec = await spawn("--bus", first.events_out, "record", str(file), "diag.")
        await read_until(rec.stderr, "record: writing")
        ids = await scripted_exchange(first, n=6)
        rec.send_signal(signal.SIGINT)
        assert await rec.wait() == 0
        await host.stop()
    # the file is plain msgpack: header record, then [mono_ns, frames]
    with file.open("rb") as f:
        records = list(msgpack.Unpacker(f, raw=False))
    assert records[0]["greenroom_recording"] == 1
    assert len(records) == 1 + len(ids)

    second = Endpoints(f"ipc://{short_tmp}/two")
    with Broker(second):
        watcher = Collector(second)
        await watcher.start()
        replayer = await spawn("--bus", second.events_out, "replay", str(file), "--speed", "4")
        assert await asyncio.wait_for(replayer.wait(), 20) == 0
        got = await watcher.expect_n(Pong, 6)
        seen = [e.id for e in watcher.seen if isinstance(e.body, Ping | Pong)]
        assert seen == ids  # same messages, same ids, same order
        assert [g.body.text for g in got] == [f"q{i}" for i in range(6)]
        # A recording is not its senders' live sequence: replayed, it is unsequenced, so a
        # filtered one (here: every other ping) is not taken for messages the bus lost.
        assert {e.header.seq for e in watcher.seen if isinstance(e.body, Ping | Pong)} == {0}
        part = short_tmp / "part.grec"
        with part.open("wb") as f:
            for record in [records[0], *records[1::4]]:
                f.write(msgpack.packb(record, use_bin_type=True))
        replayer = await spawn("--bus", second.events_out, "replay", str(part), "--speed", "4")
        assert await asyncio.wait_for(replayer.wait(), 20) == 0
        await watcher.expect_n(Ping, 6 + len(records[1::4]))
        assert watcher.conn.stats["missed"] == 0
        await watcher.close()


async def test_replay_refuses_a_file_that_is_not_a_recording(short_tmp: Path, broker: Endpoints) -> None:
    bad = short_tmp / "bad.grec"
    bad.write_bytes(msgpack.packb({"hello": 1}))
    proc = await spawn("--bus", broker.events_out, "replay", str(bad))
    assert await asyncio.wait_for(proc.wait(), 15) == 2
    assert proc.stderr is not None
    assert "not a Greenroom recording" in (await proc.stderr.read()).decode()
