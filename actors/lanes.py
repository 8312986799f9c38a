"""Per-(actor, session) mailboxes: in-order handling, control first, interruptible.

A lane owns two deques (control, data) and at most one worker task. The task
exists only while there is something to do, so ten thousand idle sessions cost
ten thousand small objects and no tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from actors.actor import Actor
from bus import Envelope

YIELD_EVERY = 64
_LOG_AT = frozenset(10**k for k in range(10))  # handlers that never suspend still let the loop breathe
log = structlog.get_logger("greenroom.lanes")


class Lane:
    __slots__ = ("_cancelling", "_done", "_idle", "_stats", "actor", "control", "current", "data", "session", "task")

    def __init__(
        self,
        actor: Actor,
        session: str,
        stats: dict[str, int],
        done: Callable[[Lane, Envelope[Any]], None],
        idle: Callable[[Lane], None],
    ) -> None:
        self.actor = actor
        self.session = session
        self.control: deque[Envelope[Any]] = deque()
        self.data: deque[Envelope[Any]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.current: Envelope[Any] | None = None
        self._cancelling = False
        self._done = done  # after each message, handled or dropped (flow control)
        self._idle = idle  # when the worker task ends with nothing left to do
        self._stats = stats

    def __len__(self) -> int:
        return len(self.control) + len(self.data)

    def put(self, env: Envelope[Any], control: bool, limit: int) -> None:
        if control:
            self.control.append(env)
        else:
            if len(self.data) >= limit:
                dropped = self.data.popleft()
                self._stats["dropped_overflow"] += 1
                if self._stats["dropped_overflow"] in _LOG_AT:  # counted always, logged sparingly
                    log.warning("lane full, oldest dropped", actor=self.actor.name, session=self.session,
                                msg_id=dropped.id, dropped_so_far=self._stats["dropped_overflow"])  # fmt: skip
                self._done(self, dropped)
            self.data.append(env)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.actor.name}:{self.session}")

    def interrupt(self, turn: int) -> None:
        """Drop queued data of turns before ``turn``; cancel the handler working on one."""
        if self.data and not self.actor.accept_stale:
            kept = deque(e for e in self.data if e.header.turn >= turn)
            for env in self.data:
                if env.header.turn < turn:
                    self._stats["stale"] += 1
                    self._done(self, env)
            self.data = kept
        current = self.current
        if (
            current is not None
            and current.header.turn < turn
            and self.actor.interrupt_cancels
            and self.task is not None
            and not self._cancelling
        ):
            self._cancelling = True
            self.task.cancel()

    async def _run(self) -> None:
        structlog.contextvars.bind_contextvars(actor=self.actor.name, session=self.session or None)
        bound_turn = -1
        n = 0
        try:
            while self.control or self.data:
                env = self.control.popleft() if self.control else self.data.popleft()
                if env.header.turn != bound_turn:
                    bound_turn = env.header.turn
                    structlog.contextvars.bind_contextvars(turn=bound_turn)
                self.current = env
                try:
                    await self.actor.on_message(env)
                    self._stats["handled"] += 1
                except asyncio.CancelledError:
                    if not self._cancelling:
                        raise  # the host is stopping us
                    self._cancelling = False
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    self._stats["cancelled"] += 1
                except Exception as exc:
                    self._stats["failed"] += 1
                    with contextlib.suppress(Exception):
                        await self.actor.on_failure(env, exc)
                finally:
                    self.current = None
                    if self._cancelling:  # the handler swallowed our cancel: take it back
                        self._cancelling = False
                        task = asyncio.current_task()
                        if task is not None:
                            task.uncancel()
                    self._done(self, env)
                n += 1
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:
            self.task = None
            self._idle(self)
