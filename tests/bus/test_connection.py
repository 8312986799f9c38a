"""Connections through a real broker: fan-out, queues, ask, loss accounting, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import zmq

from bus import Broker, BusClosed, BusError, Connection, Endpoints, Envelope, QueueFull, type_prefix
from bus.codec import encode_parts
from bus.system import Ping, Pong
from tests.helpers import Collector, Work


async def test_fan_out_reaches_every_subscriber_in_order(broker: Endpoints) -> None:
    subs = [Collector(broker, (type_prefix("test.work"),)) for _ in range(3)]
    for s in subs:
        await s.start()
    pub = Connection(broker, "pub")
    await pub.start()
    for n in range(200):
        await pub.publish(Work(n), session="s1", turn=n)
    for s in subs:
        got = await s.expect_n(Work, 200)
        assert [e.body.n for e in got] == list(range(200))
        assert s.conn.stats["missed"] == 0
    for c in [pub.close(), *(s.close() for s in subs)]:
        await c


async def test_prefix_subscription_selects_by_type(broker: Endpoints) -> None:
    only_pings = Collector(broker, (type_prefix("diag.ping"),))
    await only_pings.start()
    pub = Connection(broker, "pub")
    await pub.start()
    await pub.publish(Work(1))
    await pub.publish(Ping("p"))
    await only_pings.expect(Ping)
    assert only_pings.count(Work) == 0
    await pub.close()
    await only_pings.close()


async def test_queue_work_goes_to_exactly_one_worker(broker: Endpoints) -> None:
    got: dict[str, list[int]] = {"a": [], "b": []}
    all_done = asyncio.Event()

    def worker(name: str) -> Any:
        def handle(env: Envelope[Any], queue: str | None) -> None:
            assert queue == "echo"
            got[name].append(env.body.n)
            if len(got["a"]) + len(got["b"]) == 100:
                all_done.set()

        return handle

    workers = [Connection(broker, n) for n in got]
    for w, name in zip(workers, got, strict=True):
        await w.start(worker(name), pull=["echo"])
    producer = Connection(broker, "producer")
    await producer.start()
    for n in range(100):
        await producer.push("echo", Work(n))
    await asyncio.wait_for(all_done.wait(), 10)
    assert sorted(got["a"] + got["b"]) == list(range(100))  # each exactly once
    assert got["a"] and got["b"]  # and spread over both
    for c in [producer, *workers]:
        await c.close()


async def test_work_items_are_visible_to_taps(broker: Endpoints, watcher: Collector) -> None:
    worker = Connection(broker, "worker")
    got = asyncio.Event()
    await worker.start(lambda env, q: got.set(), pull=["echo"])
    producer = Connection(broker, "producer")
    await producer.start()
    sent = await producer.push("echo", Work(42), session="s9")
    await asyncio.wait_for(got.wait(), 5)
    seen = await watcher.expect(Work, lambda b: b.n == 42)
    assert seen.id == sent.id and seen.session == "s9"
    assert watcher.conn.stats["missed"] == 0
    await producer.close()
    await worker.close()


def pong_back(responder: Connection) -> Any:
    """A handler that answers every ping on ``responder`` with a pong."""
    replies: set[asyncio.Future[Any]] = set()

    def answer(env: Envelope[Any], queue: str | None) -> None:
        fut = asyncio.ensure_future(responder.publish(Pong(env.body.text), cause=env))
        replies.add(fut)
        fut.add_done_callback(replies.discard)

    return answer


async def test_ask_matches_reply_by_parent(broker: Endpoints) -> None:
    responder = Connection(broker, "responder")
    await responder.start(pong_back(responder), subscribe=[type_prefix("diag.ping")])
    asker = Connection(broker, "asker")
    await asker.start()
    answers = await asyncio.gather(*(asker.ask(Ping(str(i)), reply=Pong) for i in range(20)))
    assert [r.body.text for r in answers] == [str(i) for i in range(20)]
    with pytest.raises(TimeoutError):
        await asker.ask(Work(1), reply=Pong, timeout=0.2)  # nobody answers Work
    await asker.close()
    await responder.close()


async def test_pending_ask_fails_when_connection_closes(broker: Endpoints, watcher: Collector) -> None:
    asker = Connection(broker, "asker")
    await asker.start()
    pending = asyncio.ensure_future(asker.ask(Work(1), reply=Pong, timeout=30))
    await watcher.expect(Work, lambda b: b.n == 1)  # it is out; nobody will answer
    await asker.close()
    with pytest.raises(BusClosed):
        await pending


async def test_slow_subscriber_loss_is_counted_exactly(short_tmp: Any) -> None:
    ep = Endpoints(f"ipc://{short_tmp}/bus")
    with Broker(ep, hwm=50):
        slow = Connection(ep, "slow", hwm=50)
        marker_seen = asyncio.Event()
        works: list[int] = []

        def on_work(env: Envelope[Any], queue: str | None) -> None:
            works.append(env.body.n)
            if env.body.n == -1:
                marker_seen.set()

        await slow.start(on_work, subscribe=[type_prefix("test.work")])
        pub = Connection(ep, "pub")
        await pub.start()
        total = 20_000
        for n in range(total):  # never yields: the subscriber cannot read meanwhile
            pub._pub.send_multipart(pub._frames(pub.header(Work(n)), Work(n), ()), zmq.NOBLOCK)
        markers = 0
        async with asyncio.timeout(10):
            while not marker_seen.is_set():  # markers sent while it is still full are lost too
                await pub.publish(Work(-1))
                markers += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(marker_seen.wait(), 0.1)
        stats = slow.stats
        assert stats["missed"] > 0, "expected the broker to drop for a subscriber this slow"
        assert len(works) + stats["missed"] == total + markers
        body = [n for n in works if n >= 0]
        assert body == sorted(body) and works[-1] == -1  # what arrives, arrives in order
        await pub.close()
        await slow.close()


async def test_broker_restart_publishing_resumes_by_itself(short_tmp: Any) -> None:
    ep = Endpoints(f"ipc://{short_tmp}/bus")
    broker = Broker(ep)
    broker.start()
    conn = Connection(ep, "pub")
    await conn.start()
    broker.stop()
    await conn.publish(Work(1))  # buffered in the connection's pipe (bounded by its HWM)
    broker = Broker(ep)
    broker.start()
    watcher = Collector(ep)
    await watcher.start()
    got = asyncio.ensure_future(watcher.expect(Work, lambda b: b.n == 2))
    while not got.done():
        await conn.publish(Work(2))
        await asyncio.wait([got], timeout=0.1)
    assert got.result().header.src == conn.src
    await watcher.close()
    await conn.close()
    broker.stop()


async def test_events_beyond_the_buffer_while_broker_is_down_are_counted(short_tmp: Any) -> None:
    ep = Endpoints(f"ipc://{short_tmp}/bus")
    broker = Broker(ep)
    broker.start()
    conn = Connection(ep, "pub", hwm=5, send_timeout=0.05)
    await conn.start()
    before = conn.stats["published"]  # the start-up probe
    broker.stop()
    for n in range(50):
        await conn.publish(Work(n))
    stats = conn.stats
    assert stats["dropped_hwm"] > 0
    assert stats["published"] - before + stats["dropped_hwm"] == 50
    await conn.close()


async def test_full_work_queue_raises_rather_than_loses(short_tmp: Any) -> None:
    ep = Endpoints(f"ipc://{short_tmp}/bus")
    with Broker(ep, hwm=10):
        producer = Connection(ep, "producer", hwm=10, send_timeout=0.2)
        await producer.start()
        with pytest.raises(QueueFull, match="work queue 'echo' full"):
            for n in range(1000):  # no worker: the queue fills up
                await producer.push("echo", Work(n))
        assert producer.stats["queue_full"] == 1
        await producer.close()


async def test_start_without_broker_fails_clearly(short_tmp: Any) -> None:
    conn = Connection(Endpoints(f"ipc://{short_tmp}/nobody"), "lonely")
    with pytest.raises(BusError, match="no broker answered"):
        await conn.start(timeout=0.5)
    await conn.close()


async def test_second_broker_on_same_ipc_path_is_refused(broker: Endpoints) -> None:
    with pytest.raises(BusError, match="already serving"):
        Broker(broker).start()


async def test_a_publisher_in_the_brokers_process_can_send_over_inproc(short_tmp: Any) -> None:
    ep = Endpoints(f"ipc://{short_tmp}/bus")
    with Broker(ep, also_events_in=["inproc://test-also-in"]):
        watch = Collector(ep, (type_prefix("diag.ping"),))
        await watch.start()
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.XPUB)
        sock.connect("inproc://test-also-in")
        try:
            assert await asyncio.to_thread(sock.poll, 5000) == zmq.POLLIN  # the broker subscribed
            sock.recv()
            frames = encode_parts(watch.conn.header(Ping("in-process"), session="s1"), Ping("in-process"))
            sock.send_multipart(frames)
            got = await watch.expect(Ping)
            assert (got.body.text, got.session) == ("in-process", "s1")
        finally:
            sock.close(linger=0)
            await watch.close()


async def test_a_bad_extra_events_address_fails_clearly_and_frees_the_bus_path(short_tmp: Any) -> None:
    ep = Endpoints(f"ipc://{short_tmp}/bus")
    with pytest.raises(BusError, match="cannot bind bogus://x"):
        Broker(ep, also_events_in=["bogus://x"]).start()
    with Broker(ep):  # nothing of the failed start holds the socket file
        pub = Connection(ep, "pub")
        await pub.start(timeout=5)
        await pub.close()


def test_brokers_started_one_after_another_never_share_a_control_address(short_tmp: Any) -> None:
    # A collected broker's id() is soon given to the next one; its control sockets may still be in
    # libzmq's inproc registry until the reaper closes them, so addresses must never repeat.
    seen = set()
    for i in range(50):
        with Broker(Endpoints(f"ipc://{short_tmp}/bus{i % 2}"), queues=()) as broker:
            seen.add(broker._control)
        del broker
    assert len(seen) == 50


async def test_skipped_events_are_not_decoded_or_handed_over_but_an_awaited_reply_still_arrives(
    broker: Endpoints,
) -> None:
    works: list[int] = []
    got_work = asyncio.Event()

    def handle(env: Envelope[Any], queue: str | None) -> None:
        if isinstance(env.body, Work):
            works.append(env.body.n)
            got_work.set()

    listener = Connection(broker, "listener")
    await listener.start(
        handle, subscribe=[type_prefix("test.work"), type_prefix("diag.pong")],
        skip=lambda header: header.src.startswith("skipped@"),
    )  # fmt: skip
    skipped, kept = Connection(broker, "skipped"), Connection(broker, "kept")
    await skipped.start(pong_back(skipped), subscribe=[type_prefix("diag.ping")])
    await kept.start()
    await skipped.publish(Work(1))
    reply = await listener.ask(Ping("still answered"), reply=Pong, timeout=5)  # from a skipped sender
    assert reply.body.text == "still answered" and reply.header.src.startswith("skipped@")
    await kept.publish(Work(2))
    await asyncio.wait_for(got_work.wait(), 5)
    assert works == [2]  # Work(1) came before the pong, and was skipped
    assert listener.stats["skipped"] == 1
    assert listener.stats["missed"] == 0  # skipped events still count in the loss accounting
    for c in (listener, skipped, kept):
        await c.close()
