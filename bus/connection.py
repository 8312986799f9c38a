"""A part's connection to the bus: publish events, push work, receive both, ask.

Hot path design: sockets are plain (sync) pyzmq sockets; reading is a
``loop.add_reader`` callback that drains with NOBLOCK in bounded batches, and
sending tries NOBLOCK first. Only when a send would block does it fall back to
an awaited zmq.asyncio send with a timeout. That avoids a Future per message,
which is where zmq.asyncio spends most of its time.

Loss is never silent: a publish while the broker is unreachable, a send that
times out at the high-water mark, and a gap in a sender's per-type ``seq``
(the broker dropped for a slow subscriber) are each counted in :attr:`stats`
and logged (rate-limited).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from bus.codec import decode, decode_body, decode_header, encode_parts
from bus.endpoints import Endpoints
from bus.envelope import Envelope, Header, make_header, new_id, type_prefix
from bus.message import REGISTRY, BusError, DecodeError, Message, Registry, UnknownTypeError
from bus.monitor import SocketMonitor
from bus.sockio import RateLimitedLog, recv_message, recv_messages, send_frames, send_with_backoff
from bus.system import Probe

log = logging.getLogger("greenroom.bus")

Handler = Callable[[Envelope[Any], "str | None"], None]
"""Called with each decoded message and the work queue it came from (None for events)."""
Skip = Callable[[Header], bool]
"""Called with each event's header before its body is decoded: True to leave it there."""
RawHandler = Callable[[list[list[bytes]]], None]
"""Called with the frames of the events read in one go, undecoded and in order (taps and recorders)."""
BATCH = 512  # messages drained per reader callback before yielding to the loop
RAW_BATCH = 256  # the same for taps (small: a tap's writer needs its turns on a busy loop)
MAX_SEQ_KEYS = 50_000


class BusClosed(BusError):
    """The connection closed while something waited on it."""


class QueueFull(BusError):
    """A work queue stayed at its high-water mark longer than the send timeout."""


class Connection:
    """One process's (or actor host's) link to the bus."""

    def __init__(
        self,
        endpoints: Endpoints,
        name: str,
        *,
        registry: Registry = REGISTRY,
        hwm: int = 100_000,
        send_timeout: float = 1.0,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.name = name
        self.src = f"{name}@{new_id()}"  # unique per connection: a host recognises its own events by it
        self.registry = registry
        self.stats: dict[str, int] = dict.fromkeys(
            ("published", "pushed", "received", "skipped", "decode_errors", "unknown_types", "missed",
             "dropped_offline", "dropped_hwm", "queue_full"),
            0,
        )  # fmt: skip
        self._hwm = hwm
        self._send_timeout = send_timeout
        self._ctx = ctx or zmq.Context.instance()
        self._handler: Handler | None = None
        self._raw: RawHandler | None = None
        self._skip: Skip | None = None
        self._seq: dict[tuple[str, str], int] = {}
        self._last_seq: dict[tuple[str, str], int] = {}
        self._pending: dict[str, tuple[asyncio.Future[Envelope[Any]], tuple[str, ...]]] = {}
        self._pushers: dict[str, zmq.Socket[bytes]] = {}
        self._pullers: dict[str, zmq.Socket[bytes]] = {}
        self._subscribed: set[str] = set()
        self._paused: set[str] = set()
        self._events_paused = False
        self._pub_live = False
        self._upstream_seen: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._ratelog = RateLimitedLog(log)
        self._monitor = SocketMonitor(self._ctx, self.src)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pub: zmq.Socket[bytes] = self._socket(zmq.XPUB)
        self._pub.setsockopt(zmq.XPUB_NODROP, 1)
        self._sub: zmq.Socket[bytes] = self._socket(zmq.SUB)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(
        self,
        handler: Handler | None = None,
        *,
        subscribe: Iterable[str] = (),
        pull: Iterable[str] = (),
        raw: RawHandler | None = None,
        skip: Skip | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Connect, subscribe, and return once publishing and subscriptions are live.

        With ``raw``, events are handed over as frames without decoding, a batch per call.
        ``skip`` sees each event's header first: where it says yes, the body is not decoded
        and the handler never sees the event (unless an ``ask`` waits for it), e.g. a host's
        own actors' events, which it delivered to its actors when they were published.
        """
        self._loop = asyncio.get_running_loop()
        self._handler = handler
        self._raw = raw
        self._skip = skip
        self._upstream_seen = asyncio.Event()
        self._monitor.watch(self._pub, self.endpoints.events_in)
        self._monitor.watch(self._sub, self.endpoints.events_out)
        self._pub.connect(self.endpoints.events_in)
        self._sub.connect(self.endpoints.events_out)
        for prefix in subscribe:
            self.subscribe(prefix)
        for queue in pull:
            self._pull(queue)
        self._loop.add_reader(self._sub.FD, self._drain, self._sub, None)
        self._monitor.start()
        self._spawn(self._watch_upstream())
        try:
            await asyncio.wait_for(self._upstream_seen.wait(), timeout)
            await self._probe(timeout)
        except TimeoutError:
            raise BusError(f"no broker answered at {self.endpoints.events_in} within {timeout:g}s") from None

    async def close(self, linger: float = 0.5) -> None:
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        for sock in (self._sub, *self._pullers.values()):
            if loop is not None and not sock.closed:
                loop.remove_reader(sock.FD)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(BusClosed(f"{self.src} closed before a reply arrived"))
        self._pending.clear()
        self._monitor.stop()
        for sock in (self._pub, self._sub, *self._pushers.values(), *self._pullers.values()):
            sock.close(linger=int(linger * 1000))

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, prefix: str) -> None:
        """Receive events whose topic starts with ``prefix`` (use ``type_prefix`` for one type)."""
        if prefix not in self._subscribed:
            self._subscribed.add(prefix)
            self._sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
            self._redrain()

    def unsubscribe(self, prefix: str) -> None:
        if prefix in self._subscribed:
            self._subscribed.discard(prefix)
            self._sub.setsockopt(zmq.UNSUBSCRIBE, prefix.encode())
            self._redrain()

    def _redrain(self) -> None:
        # A setsockopt processes socket commands and may consume the edge-triggered FD
        # wake-up for messages already waiting: look once more by hand.
        if self._loop is not None and not self._closed and not self._events_paused:
            self._loop.call_soon(self._drain, self._sub, None)

    def pause_events(self) -> None:
        """Stop reading events; they wait in ZeroMQ's bounded buffers (loss there is a counted gap)."""
        if self._loop is not None and not self._events_paused:
            self._events_paused = True
            self._loop.remove_reader(self._sub.FD)

    def resume_events(self) -> None:
        if self._loop is not None and self._events_paused and not self._closed:
            self._events_paused = False
            self._loop.add_reader(self._sub.FD, self._drain, self._sub, None)
            self._loop.call_soon(self._drain, self._sub, None)

    def pause(self, queue: str) -> None:
        """Stop taking work from ``queue`` (it waits in the broker) until :meth:`resume`."""
        sock = self._pullers[queue]
        self._paused.add(queue)
        if self._loop is not None:
            self._loop.remove_reader(sock.FD)

    def resume(self, queue: str) -> None:
        sock = self._pullers[queue]
        self._paused.discard(queue)
        if self._loop is not None and not self._closed:
            self._loop.add_reader(sock.FD, self._drain, sock, queue)
            self._loop.call_soon(self._drain, sock, queue)  # edge-triggered: catch up by hand

    # -- sending ----------------------------------------------------------------------------

    def header(
        self, body: Message, *, session: str = "", turn: int = 0, parent: str | None = None,
        cause: Envelope[Any] | None = None, seq: bool = True, src: str | None = None,
    ) -> Header:  # fmt: skip
        """Build the header for ``body``; ``src`` names an actor sharing this connection."""
        spec = self.registry.spec_of(type(body))
        src = src or self.src
        if cause is not None:
            session, turn, parent = cause.header.session, cause.header.turn, cause.header.id
        n = 0
        if seq:
            key = (src, spec.wire)
            n = self._seq.get(key, 0) + 1
            self._seq[key] = n
        return make_header(spec.wire, session=session, turn=turn, parent=parent, src=src, v=spec.version, seq=n)

    def _frames(self, header: Header, body: Message, extra: tuple[bytes, ...]) -> list[bytes]:
        return encode_parts(header, body, extra, self.registry)

    async def publish(
        self, body: Message, *, session: str = "", turn: int = 0, parent: str | None = None,
        cause: Envelope[Any] | None = None, extra: tuple[bytes, ...] = (), src: str | None = None,
    ) -> Header:  # fmt: skip
        """Publish an event. ``cause`` sets session, turn and parent from the message that caused it.

        Never raises for loss: a drop is counted in :attr:`stats` and logged.
        """
        header = self.header(body, session=session, turn=turn, parent=parent, cause=cause, src=src)
        await self._send_event(header.type, self._frames(header, body, extra))
        return header

    async def push(
        self, queue: str, body: Message, *, session: str = "", turn: int = 0,
        parent: str | None = None, cause: Envelope[Any] | None = None, extra: tuple[bytes, ...] = (),
        src: str | None = None,
    ) -> Header:  # fmt: skip
        """Hand work to one worker of ``queue``. Raises QueueFull rather than lose it."""
        header = self.header(body, session=session, turn=turn, parent=parent, cause=cause, seq=False, src=src)
        await self._send_work(queue, self._frames(header, body, extra))
        return header

    async def announce_work(self, header: Header, body: Message, extra: tuple[bytes, ...] = ()) -> None:
        """Publish the tap copy of a work item handed over in this process (what the broker's
        queue capture does for the others): ``seq`` 0, so no actor handles it twice."""
        await self._send_event(header.type, self._frames(header, body, extra))

    async def ask(
        self, body: Message, *, reply: type[Message] | tuple[type[Message], ...], timeout: float = 5.0,
        queue: str | None = None, session: str = "", turn: int = 0, parent: str | None = None,
        src: str | None = None,
    ) -> Envelope[Any]:  # fmt: skip
        """Send ``body`` (an event, or work on ``queue``) and await the reply whose parent it is.

        Raises TimeoutError, QueueFull, or BusClosed if the connection closes first.
        """
        kinds = reply if isinstance(reply, tuple) else (reply,)
        wires = tuple(self.registry.spec_of(k).wire for k in kinds)
        for wire in wires:
            self.subscribe(type_prefix(wire))
        header = self.header(body, session=session, turn=turn, parent=parent, seq=queue is None, src=src)
        frames = self._frames(header, body, ())
        fut = self._expect(header.id, wires)
        try:
            if queue is not None:
                await self._send_work(queue, frames)
            elif not await self._send_event(header.type, frames):
                raise BusError(f"{header.type} could not be sent: broker unreachable or not keeping up")
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(header.id, None)

    async def publish_raw(self, frames: list[bytes]) -> bool:
        """Send already-encoded event frames as they are (replay). False if dropped."""
        return await self._send_event(frames[0].decode(errors="replace"), frames)

    def _expect(self, parent: str, wires: tuple[str, ...]) -> asyncio.Future[Envelope[Any]]:
        fut: asyncio.Future[Envelope[Any]] = asyncio.get_running_loop().create_future()
        self._pending[parent] = (fut, wires)
        return fut

    async def _send_event(self, what: str, frames: list[bytes]) -> bool:
        if not self._pub_live:
            self._check_upstream()  # it may have come back since the last look
        if not self._pub_live:
            self.stats["dropped_offline"] += 1
            self._ratelog.warning("offline", "event dropped: broker unreachable", type=what)
            return False
        try:
            send_frames(self._pub, frames)
        except zmq.Again:
            if not await send_with_backoff(self._pub, frames, self._send_timeout):
                self.stats["dropped_hwm"] += 1
                self._ratelog.warning("hwm", "event dropped: broker not keeping up", type=what)
                return False
        self.stats["published"] += 1
        return True

    async def _send_work(self, queue: str, frames: list[bytes]) -> None:
        sock = self._pushers.get(queue)
        if sock is None:
            sock = self._pushers[queue] = self._socket(zmq.PUSH)
            sock.connect(self.endpoints.queue_push(queue))
        try:
            send_frames(sock, frames)
        except zmq.Again:
            if not await send_with_backoff(sock, frames, self._send_timeout):
                self.stats["queue_full"] += 1
                raise QueueFull(f"work queue {queue!r} full for {self._send_timeout:g}s") from None
        self.stats["pushed"] += 1

    # -- receiving --------------------------------------------------------------------------

    def _drain(self, sock: zmq.Socket[bytes], queue: str | None) -> None:
        if self._closed or sock.closed:
            return
        if self._raw is not None and queue is None:
            self._drain_raw(sock, self._raw)
            return
        for _ in range(BATCH):
            try:
                frames = recv_message(sock)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return  # socket closed under us during shutdown
            self._deliver(frames, queue)
            if (queue is None and self._events_paused) or (queue is not None and queue in self._paused):
                return  # the handler asked for no more just now
        assert self._loop is not None
        self._loop.call_soon(self._drain, sock, queue)  # more may be waiting; let others run first

    def _drain_raw(self, sock: zmq.Socket[bytes], raw: RawHandler) -> None:
        """A tap's drain: the frames of up to ``RAW_BATCH`` events, in order, to its handler in
        one call (the hot path of the telemetry sink)."""
        try:
            events = recv_messages(sock, RAW_BATCH)
        except zmq.ZMQError:
            return  # socket closed under us during shutdown
        if events:
            self.stats["received"] += len(events)
            if self._pending:  # our own probe may be among them
                for frames in events:
                    with contextlib.suppress(DecodeError):
                        self._resolve(decode(frames, self.registry))
            raw(events)
        if len(events) < RAW_BATCH or self._events_paused:
            return  # nothing more waits (the read ran out), or the handler asked for no more just now
        assert self._loop is not None
        self._loop.call_soon(self._drain, sock, None)  # more may be waiting; let others run first

    def _deliver(self, frames: list[bytes], queue: str | None) -> None:
        self.stats["received"] += 1
        try:
            header, _ = decode_header(frames)
            if queue is None:
                if header.seq:
                    self._check_seq(header)
                skip = self._skip
                if skip is not None and skip(header) and (header.parent is None or header.parent not in self._pending):
                    self.stats["skipped"] += 1
                    return
            env = decode_body(header, frames, self.registry)
        except UnknownTypeError as exc:
            self.stats["unknown_types"] += 1
            self._ratelog.warning("unknown", "message of unknown type ignored", error=str(exc))
            return
        except DecodeError as exc:
            self.stats["decode_errors"] += 1
            self._ratelog.warning("decode", "undecodable message ignored", error=str(exc), frames=len(frames))
            return
        if header.parent is not None and self._pending:
            self._resolve(env)
            if header.src == self.src and isinstance(env.body, Probe):
                return  # our own liveness probe is nobody else's business
        if self._handler is not None:
            self._handler(env, queue)

    def _resolve(self, env: Envelope[Any]) -> None:
        waiting = self._pending.get(env.header.parent or "")
        if waiting is not None and env.header.type in waiting[1] and not waiting[0].done():
            waiting[0].set_result(env)

    def _check_seq(self, header: Header) -> None:
        key = (header.src, header.type)
        last = self._last_seq.get(key)
        if last is not None and header.seq > last + 1:
            missed = header.seq - last - 1
            self.stats["missed"] += missed
            self._ratelog.warning("gap", "messages lost on the way", type=header.type, src=header.src, missed=missed)
        if len(self._last_seq) > MAX_SEQ_KEYS:
            self._last_seq.clear()
        self._last_seq[key] = header.seq

    # -- internals --------------------------------------------------------------------------

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(kind)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.RCVHWM, self._hwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        return sock

    def pull(self, queue: str) -> None:
        """Start taking work from ``queue`` (after :meth:`start`; e.g. once the workers are ready)."""
        if queue not in self._pullers:
            self._pull(queue)

    def _pull(self, queue: str) -> None:
        sock = self._socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, 16)  # hoard little: leave work for other workers
        sock.connect(self.endpoints.queue_pull(queue))
        self._monitor.watch(sock, self.endpoints.queue_pull(queue))
        self._pullers[queue] = sock
        assert self._loop is not None
        self._loop.add_reader(sock.FD, self._drain, sock, queue)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check_upstream(self) -> None:
        """Read the broker's (un)subscriptions off our XPUB: that is when events can flow.

        The broker's XSUB subscribes to everything on every (re)connect and the XPUB reports
        the subscription going away when that broker does.
        """
        while True:
            try:
                msg = self._pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError:
                return
            if msg not in (b"\x00", b"\x01"):
                continue  # a downstream subscriber's topic, forwarded: not about the broker
            live = msg == b"\x01"
            if live != self._pub_live:
                self._pub_live = live
                log.info("broker subscription " + ("live" if live else "lost"), extra={"src": self.src})
        if self._pub_live and self._upstream_seen is not None:
            self._upstream_seen.set()

    async def _watch_upstream(self) -> None:
        while True:
            self._check_upstream()
            await asyncio.sleep(0.01 if not self._pub_live else 0.25)

    async def _probe(self, timeout: float) -> None:
        """Publish to ourselves through the broker: proves our subscription is live there."""
        wire = self.registry.spec_of(Probe).wire
        self.subscribe(type_prefix(wire))
        nonce = new_id()
        fut = self._expect(nonce, (wire,))
        deadline = time.monotonic() + timeout
        try:
            while not fut.done():
                await self.publish(Probe(nonce), parent=nonce)
                await asyncio.wait([fut], timeout=0.1)
                if time.monotonic() > deadline:
                    raise TimeoutError
        finally:
            self._pending.pop(nonce, None)
            self.unsubscribe(type_prefix(wire))
