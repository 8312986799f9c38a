"""The actor host over a real broker: order, control, interrupt, failure, bad input, flow control."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import msgpack
import pytest
import zmq

from actors import Actor, Host
from bus import Connection, Endpoints, Envelope, Message, message
from bus.envelope import make_header
from bus.system import Cancel, Error, Heartbeat, Interrupt, Ready, Shutdown, Stopped
from tests.helpers import Collector, Done, Work


class Worker(Actor):
    """Does Work; 'block' waits for the test's gate, 'fail' raises; reports cancellation."""

    name = "worker"
    handles = (Work, Cancel)
    queues = ("echo",)
    max_inflight = 3
    gate: ClassVar[asyncio.Event]
    active: ClassVar[int] = 0
    peak: ClassVar[int] = 0

    async def on_message(self, env: Envelope[Any]) -> None:
        body = env.body
        if isinstance(body, Cancel):
            await self.bus.publish(Done(-1, self.name, "cancel"), cause=env)
            return
        cls = type(self)
        cls.active += 1
        cls.peak = max(cls.peak, cls.active)
        try:
            if body.text == "block":
                await cls.gate.wait()
            if body.text == "fail":
                raise RuntimeError("boom")
            await self.bus.publish(Done(body.n, self.name, "ok"), cause=env)
        except asyncio.CancelledError:
            await self.bus.publish(Done(body.n, self.name, "cancelled"), cause=env)
            raise
        finally:
            cls.active -= 1


@pytest.fixture
async def host(broker: Endpoints) -> AsyncIterator[Host]:
    Worker.gate = asyncio.Event()
    Worker.active = Worker.peak = 0
    h = Host(broker, [Worker], heartbeat=0.1)
    await h.start()
    yield h
    Worker.gate.set()
    await h.stop()


@pytest.fixture
async def sender(broker: Endpoints) -> AsyncIterator[Connection]:
    conn = Connection(broker, "sender")
    await conn.start()
    yield conn
    await conn.close()


def done_ns(c: Collector, session: str) -> list[int]:
    return [e.body.n for e in c.seen if isinstance(e.body, Done) and e.session == session]


async def test_sessions_are_in_order_and_independent(host: Host, sender: Connection, watcher: Collector) -> None:
    await sender.publish(Work(0, "block"), session="A")
    for n in range(1, 51):
        await sender.publish(Work(n), session="A")
        await sender.publish(Work(n), session="B")
    # B is not held up by A's blocked handler
    await watcher.expect_n(Done, 50, lambda b: True)
    assert done_ns(watcher, "B") == list(range(1, 51))
    assert done_ns(watcher, "A") == []
    Worker.gate.set()
    await watcher.expect_n(Done, 101)
    assert done_ns(watcher, "A") == list(range(51))  # in order, one at a time


async def test_control_overtakes_queued_data(host: Host, sender: Connection, watcher: Collector) -> None:
    await sender.publish(Work(1, "block"), session="A")
    await watcher.expect(Work, lambda b: b.n == 1)
    await sender.publish(Work(2), session="A")
    await sender.publish(Work(3), session="A")
    await sender.publish(Cancel("x"), session="A")
    await watcher.expect(Cancel)
    Worker.gate.set()
    await watcher.expect_n(Done, 4)
    assert done_ns(watcher, "A") == [1, -1, 2, 3]


async def test_interrupt_cancels_stale_turn_and_drops_its_queue(
    host: Host, sender: Connection, watcher: Collector
) -> None:
    await sender.publish(Work(1, "block"), session="A", turn=1)
    await sender.publish(Work(2), session="A", turn=1)
    await sender.publish(Work(9), session="B", turn=1)  # another session: untouched
    await watcher.expect(Done, lambda b: b.n == 9)
    await sender.publish(Interrupt("barge-in"), session="A", turn=2)
    cancelled = await watcher.expect(Done, lambda b: b.note == "cancelled")
    assert cancelled.body.n == 1 and cancelled.turn == 1
    await sender.publish(Work(3), session="A", turn=2)
    await sender.publish(Work(4), session="A", turn=1)  # late data of the old turn
    await sender.publish(Work(5), session="A", turn=2)
    await watcher.expect(Done, lambda b: b.n == 5)
    assert done_ns(watcher, "A") == [1, 3, 5]  # 1 reported as cancelled, 2 and 4 never run
    assert host.stats["cancelled"] == 1
    assert host.stats["stale"] == 2


async def test_failure_is_reported_and_the_actor_goes_on(host: Host, sender: Connection, watcher: Collector) -> None:
    bad = await sender.publish(Work(1, "fail"), session="A")
    error = await watcher.expect(Error)
    assert error.body.code == "handler_failed" and error.body.ref == bad.id
    assert "boom" in error.body.message
    await sender.publish(Work(2), session="A")
    await watcher.expect(Done, lambda b: b.n == 2)
    assert host.stats["failed"] == 1


async def test_garbage_and_unknown_types_are_counted_and_survived(
    host: Host, broker: Endpoints, sender: Connection, watcher: Collector
) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    foreign = ctx.socket(zmq.XPUB)  # any language's ZeroMQ client
    foreign.connect(broker.events_in)
    foreign.RCVTIMEO = 5000
    while foreign.recv() != b"\x01":  # the broker's subscription: our path is live
        pass

    def header(type_: str) -> bytes:
        return msgpack.packb(make_header(type_, session="A", turn=0, parent=None, src="x@1", v=1, seq=1).to_wire())

    garbage = [
        [b"test.work|A"],
        [b"test.work|A", b"\xc1\xc1", b"\x80"],
        [b"test.work|A", header("test.work"), b"not msgpack \xc1"],
        [b"test.work|A", header("test.work"), msgpack.packb({"n": "one"})],
        [b"test.work|A", header("test.work"), msgpack.packb({"n": 1, "rm -rf": True})],
        [b"test.workX|A", header("test.workX"), msgpack.packb({})],  # unknown type
        [b"test.work|A", header("test.work"), msgpack.packb({"n": 1}) * 2, b"\x00" * 10_000],
    ]
    for frames in garbage:
        foreign.send_multipart(frames)
    foreign.send_multipart([b"test.work|A", header("test.work"), msgpack.packb({"n": 7})])
    await watcher.expect(Done, lambda b: b.n == 7)
    stats = host.conn.stats
    # "test.workX" does not match the host's "test.work|" subscription: the broker filters it
    assert stats["decode_errors"] == 6
    foreign.close(0)
    # a subscriber to everything counts the unknown one
    assert watcher.conn.stats["unknown_types"] == 1


async def test_queue_flow_control_bounds_work_in_flight(host: Host, sender: Connection, watcher: Collector) -> None:
    for n in range(20):
        await sender.push("echo", Work(n, "block"), session=f"s{n}")
    with contextlib.suppress(TimeoutError):
        await watcher.expect(Done, timeout=0.3)  # nothing can finish while the gate is shut
    assert Worker.peak == Worker.max_inflight
    Worker.gate.set()
    got = await watcher.expect_n(Done, 20)
    assert sorted(e.body.n for e in got) == list(range(20))
    assert Worker.peak == Worker.max_inflight


async def test_heartbeats_carry_stats(host: Host, watcher: Collector) -> None:
    beat = await watcher.expect(Heartbeat, lambda b: b.name == "worker")
    assert beat.body.actors == ("worker",)
    assert {"handled", "failed", "missed", "decode_errors", "lanes"} <= set(beat.body.stats)


async def test_shutdown_message_stops_the_host(broker: Endpoints, sender: Connection, watcher: Collector) -> None:
    h = Host(broker, [Worker])
    runner = asyncio.create_task(h.run())
    ready = await watcher.expect(Ready)
    assert ready.body.actors == ("worker",)
    await sender.publish(Shutdown("worker", "test"))
    await asyncio.wait_for(runner, 5)
    stopped = await watcher.expect(Stopped)
    assert stopped.body.name == "worker"


class Announcer(Actor):
    """Turns each Work into a Done event."""

    name = "announcer"
    handles = (Work,)

    async def on_message(self, env: Envelope[Any]) -> None:
        await self.bus.publish(Done(env.body.n, self.name), cause=env)


class Listener(Actor):
    """Records every Done it is given, and a Cancel as the end marker."""

    name = "listener"
    handles = (Done, Cancel)
    got: ClassVar[list[object]]
    ended: ClassVar[asyncio.Event]

    async def on_message(self, env: Envelope[Any]) -> None:
        type(self).got.append(env.body.n if isinstance(env.body, Done) else "end")
        if isinstance(env.body, Cancel):
            type(self).ended.set()


class FarListener(Listener):
    name = "far-listener"
    got: ClassVar[list[object]]
    ended: ClassVar[asyncio.Event]


async def test_events_between_actors_of_one_host_arrive_once_in_order_and_still_reach_the_bus(
    broker: Endpoints, sender: Connection, watcher: Collector
) -> None:
    Listener.got, FarListener.got = [], []
    Listener.ended, FarListener.ended = asyncio.Event(), asyncio.Event()
    near = Host(broker, [Announcer, Listener])
    far = Host(broker, [FarListener])
    await near.start()
    await far.start()
    try:
        for n in range(100):
            await sender.publish(Work(n), session="A")
        seen = await watcher.expect_n(Done, 100)
        assert [e.body.n for e in seen] == list(range(100))  # taps still see every event
        # Whatever the bus carries back to the near host arrives before this marker does.
        await sender.publish(Cancel("end"), session="A")
        await asyncio.wait_for(Listener.ended.wait(), 10)
        await asyncio.wait_for(FarListener.ended.wait(), 10)
        assert Listener.got == [*range(100), "end"]  # local delivery: once each, in order
        assert FarListener.got == [*range(100), "end"]  # another host: through the broker
    finally:
        await near.stop()
        await far.stop()


@message("test.job")
class Job(Message):
    """Work handed from one actor to another through a queue."""

    n: int
    """Sequence number."""


class Dispatcher(Actor):
    """Turns each Work event into a Job on the 'echo' queue."""

    name = "dispatcher"
    handles = (Work,)

    async def on_message(self, env: Envelope[Any]) -> None:
        await self.bus.push("echo", Job(env.body.n), cause=env)


class LocalWorker(Actor):
    """Prefers local work; holds each job until the test opens the gate."""

    name = "local-worker"
    queues = ("echo",)
    prefer_local = True
    max_inflight = 2
    gate: ClassVar[asyncio.Event]

    async def on_message(self, env: Envelope[Any]) -> None:
        await type(self).gate.wait()
        await self.bus.publish(Done(env.body.n, self.name), cause=env)


class FarWorker(Actor):
    name = "far-worker"
    queues = ("echo",)

    async def on_message(self, env: Envelope[Any]) -> None:
        await self.bus.publish(Done(env.body.n, self.name), cause=env)


async def test_work_for_a_local_actor_skips_the_broker_until_it_is_full(
    broker: Endpoints, sender: Connection, watcher: Collector
) -> None:
    LocalWorker.gate = asyncio.Event()
    near = Host(broker, [Dispatcher, LocalWorker])
    far = Host(broker, [FarWorker])
    await near.start()
    await far.start()
    try:
        for n in range(6):
            await sender.publish(Work(n), session=f"s{n}")
        jobs = await watcher.expect_n(Job, 6)  # taps see every work item, local or not
        assert sorted(e.body.n for e in jobs) == list(range(6)) and all(e.header.seq == 0 for e in jobs)
        assert near.stats["work_local"] == 2  # room for two here; the rest went to the queue
        LocalWorker.gate.set()
        done = await watcher.expect_n(Done, 6)
        assert sorted(e.body.n for e in done) == list(range(6))  # each handled once, here or there
        assert any(e.body.by == "far-worker" for e in done)
        assert near.snapshot()["work_local"] == 2  # ... and reported in heartbeats
    finally:
        await near.stop()
        await far.stop()


class SlowStarter(Actor):
    """Takes its time in on_start; any message before it is ready would find it unready."""

    name = "slow"
    handles = (Work,)
    queues = ("echo",)
    release: ClassVar[asyncio.Event]

    async def on_start(self) -> None:
        await type(self).release.wait()
        self.ready = True

    async def on_message(self, env: Envelope[Any]) -> None:
        note = "ready" if getattr(self, "ready", False) else "not ready"
        await self.bus.publish(Done(env.body.n, "queue" if env.body.text == "work" else "event", note), cause=env)


async def test_nothing_reaches_an_actor_before_its_on_start_is_done(broker: Endpoints, watcher: Collector) -> None:
    SlowStarter.release = asyncio.Event()
    host = Host(broker, [SlowStarter], heartbeat=0.1)
    starting = asyncio.create_task(host.start())
    sender = Connection(broker, "sender")
    await sender.start(lambda env, q: None, subscribe=[])
    for n in range(3):
        await sender.publish(Work(n, "event"))
        await sender.push("echo", Work(n, "work"))
    await watcher.expect_n(Work, 3)  # the events are out (the work waits in the broker: nobody pulls it yet)
    assert not any(isinstance(e.body, Done) for e in watcher.seen)
    SlowStarter.release.set()
    await starting
    done = await watcher.expect_n(Done, 6)
    assert {(d.body.by, d.body.n) for d in done} == {(k, n) for k in ("event", "queue") for n in range(3)}
    assert all(d.body.note == "ready" for d in done)
    await sender.close()
    await host.stop()


class Picky(Actor):
    """Selective: a Work matters only to a session it opened ('open'), or if it is 'open' or
    'block' itself; each handled Work is reported."""

    name = "picky"
    handles = (Work,)
    selective = True
    gate: ClassVar[asyncio.Event]
    opened: ClassVar[set[str]]

    def wants(self, env: Envelope[Any]) -> bool:
        return env.body.text in ("open", "block") or env.session in self.opened

    async def on_message(self, env: Envelope[Any]) -> None:
        if env.body.text == "open":
            type(self).opened.add(env.session)
        if env.body.text == "block":
            await type(self).gate.wait()
        await self.bus.publish(Done(env.body.n, self.name), cause=env)


async def test_a_selective_actor_gets_no_lane_for_what_it_does_not_want_unless_one_is_busy(
    broker: Endpoints, sender: Connection, watcher: Collector
) -> None:
    Picky.gate, Picky.opened = asyncio.Event(), set()
    host = Host(broker, [Picky])
    await host.start()
    try:
        for n, text in ((1, ""), (2, "open"), (3, "")):
            await sender.publish(Work(n, text), session="A")
        await sender.publish(Work(1, "block"), session="B")
        await sender.publish(Work(2), session="B")  # unwanted, but its lane is busy: it waits its turn
        await watcher.expect_n(Done, 2)
        assert done_ns(watcher, "A") == [2, 3]  # 1 came before the session was opened: never handled
        assert done_ns(watcher, "B") == [] and host.stats["unwanted"] == 1
        Picky.gate.set()
        await watcher.expect_n(Done, 4)
        assert done_ns(watcher, "B") == [1, 2]  # in order, as if it had wanted it
        assert host.stats["handled"] == 4 and host.stats["unwanted"] == 1
    finally:
        await host.stop()


class Slow(Actor):
    """Pulls 'echo', preferring local ones; each waits until the test releases it."""

    name = "slow"
    queues = ("echo",)
    prefer_local = True
    max_inflight = 4
    started: ClassVar[list[int]] = []
    release: ClassVar[dict[int, asyncio.Event]] = {}

    async def on_message(self, env: Envelope[Any]) -> None:
        n = env.body.n
        type(self).started.append(n)
        await type(self).release[n].wait()
        await self.bus.publish(Done(n, self.name, "ok"), cause=env)


async def test_local_work_does_not_overtake_work_waiting_in_the_queue(
    broker: Endpoints, sender: Connection, watcher: Collector
) -> None:
    Slow.started = []
    Slow.release = {n: asyncio.Event() for n in range(1, 7)}
    Slow.release[5].set()
    Slow.release[6].set()
    host = Host(broker, [Dispatcher, Slow], heartbeat=0.1)
    await host.start()
    try:
        for n in range(1, 6):
            await sender.publish(Work(n), session=f"s{n}")
        await watcher.expect(Job, lambda b: b.n == 5)  # taps see every job, taken here or queued
        assert host.stats["work_local"] == 4  # full: job 5 went to the queue
        Slow.release[1].set()
        await watcher.expect(Done, lambda b: b.n == 1)
        await sender.publish(Work(6), session="s6")  # room for one more here, but job 5 came first
        await watcher.expect(Job, lambda b: b.n == 6)  # where it went was decided when it was pushed
        assert host.stats["work_local"] == 4, "local work overtook work waiting in the queue"
        Slow.release[2].set()  # below half: the queue is read again, in order
        await watcher.expect_n(Done, 2, lambda b: b.n in (5, 6))
        assert Slow.started == [1, 2, 3, 4, 5, 6]
        for event in Slow.release.values():
            event.set()
        await watcher.expect_n(Done, 6)
    finally:
        for event in Slow.release.values():
            event.set()
        await host.stop()
