"""The actor: a small object with four lifecycle hooks, fed one message at a time per session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import structlog

from bus import Connection, Envelope, Header, Message
from bus.system import Error


class ActorBus:
    """What an actor may do on the bus, stamped with the actor's own ``src``.

    Actors never see a socket: they publish events, push work and ask. The host may give
    two shortcuts: ``local`` is handed every published event right away (the host delivers
    it to its own actors without the round trip through the broker and skips the bus
    copy); ``local_work`` takes a pushed work item here when an actor of this host that
    prefers local work pulls that queue and has room (returns False otherwise).
    """

    __slots__ = ("_conn", "_local", "_local_work", "src")

    def __init__(
        self, conn: Connection, src: str, local: Callable[[Envelope[Any]], None] | None = None,
        local_work: Callable[[str, Envelope[Any] | None], bool] | None = None,
    ) -> None:  # fmt: skip
        self._conn = conn
        self._local = local
        self._local_work = local_work
        self.src = src

    async def publish(
        self, body: Message, *, cause: Envelope[Any] | None = None, session: str = "", turn: int = 0,
        parent: str | None = None, extra: tuple[bytes, ...] = (),
    ) -> Header:  # fmt: skip
        header = await self._conn.publish(
            body, cause=cause, session=session, turn=turn, parent=parent, extra=extra, src=self.src
        )
        if self._local is not None:
            self._local(Envelope(header, body, extra))
        return header

    async def push(
        self, queue: str, body: Message, *, cause: Envelope[Any] | None = None, session: str = "",
        turn: int = 0, parent: str | None = None, extra: tuple[bytes, ...] = (),
    ) -> Header:  # fmt: skip
        take = self._local_work
        if take is not None and take(queue, None):
            header = self._conn.header(
                body, session=session, turn=turn, parent=parent, cause=cause, seq=False, src=self.src
            )
            env = Envelope(header, body, extra)
            take(queue, env)
            await self._conn.announce_work(header, body, extra)
            return header
        return await self._conn.push(
            queue, body, cause=cause, session=session, turn=turn, parent=parent, extra=extra, src=self.src
        )

    async def ask(
        self, body: Message, *, reply: type[Message] | tuple[type[Message], ...], timeout: float = 5.0,
        queue: str | None = None, session: str = "", turn: int = 0, parent: str | None = None,
    ) -> Envelope[Any]:  # fmt: skip
        return await self._conn.ask(
            body,
            reply=reply,
            timeout=timeout,
            queue=queue,
            session=session,
            turn=turn,
            parent=parent,
            src=self.src,
        )


class Actor:
    """Subclass, name it, declare what it handles, implement :meth:`on_message`.

    - ``handles``: event types it subscribes to (PUB/SUB, every replica sees each).
    - ``queues``: work queues it pulls from (PUSH/PULL, one replica gets each).
    - Messages of one session reach it in order, one at a time; sessions run concurrently.
    - A ``sys.interrupt`` for a session drops its queued data of older turns and,
      when ``interrupt_cancels`` is true, cancels the handler still working on one.
    """

    name: ClassVar[str] = ""
    handles: ClassVar[tuple[type[Message], ...]] = ()
    queues: ClassVar[tuple[str, ...]] = ()
    interrupt_cancels: ClassVar[bool] = True
    accept_stale: ClassVar[bool] = False
    """True: also receive data of turns an interrupt made stale (e.g. to record what was cut off)."""
    max_inflight: ClassVar[int] = 64
    """Most queue messages taken but not yet handled; past it the queue waits in the broker."""
    prefer_local: ClassVar[bool] = False
    """True: work pushed to its queues by an actor of the same host is taken here while it has
    room (no broker round trip); once ``max_inflight`` is reached it goes to the queue as usual
    until the actor has drained to half (so it never overtakes work already waiting there). Right
    for actors whose work mostly waits on something else (a model server), wrong for CPU-bound
    ones, whose work should spread over replicas."""

    selective: ClassVar[bool] = False
    """True: :meth:`wants` is asked, before a lane is made, whether an event for a session with
    nothing queued here is worth handling at all."""

    def __init__(self, bus: ActorBus) -> None:
        self.bus = bus
        self.log = structlog.get_logger(self.name or type(self).__name__).bind(actor=self.name)

    async def on_start(self) -> None:
        """Called once before any message; the bus is live."""

    def wants(self, env: Envelope[Any]) -> bool:
        """For a ``selective`` actor: whether this event would do anything, given what the actor
        holds now (the host asks only when nothing of the session is queued or running here,
        so earlier events have been handled). False: no lane, no task, no call. Synchronous
        and cheap; never called for work items."""
        return True

    async def on_message(self, env: Envelope[Any]) -> None:
        """Handle one message. Raising is fine: :meth:`on_failure` runs and the actor goes on."""
        raise NotImplementedError

    async def on_failure(self, env: Envelope[Any], exc: BaseException) -> None:
        """Default: log with the message id and tell the bus."""
        self.log.error(
            "handler failed", msg_id=env.id, type=env.type, error=f"{type(exc).__name__}: {exc}", exc_info=exc
        )
        await self.bus.publish(
            Error("handler_failed", f"{self.name} failed on {env.type}: {type(exc).__name__}: {exc}", ref=env.id),
            cause=env,
        )

    async def on_stop(self) -> None:
        """Called once after the last message."""
