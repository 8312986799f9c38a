"""Test helpers: message types for tests, a collector that waits on bus messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bus import Connection, Endpoints, Envelope, Message, message


@message("test.work")
class Work(Message):
    """Something for a test actor to do."""

    n: int
    """Sequence number chosen by the test."""
    text: str = ""
    """Instruction: 'block', 'fail', 'slow' or anything."""


@message("test.done")
class Done(Message):
    """A test actor finished (or was told about) a Work."""

    n: int
    """The Work's n."""
    by: str = ""
    """Which actor."""
    note: str = ""
    """What happened."""


class Collector:
    """Subscribes to the bus and lets a test await the message it expects, with a timeout."""

    def __init__(self, endpoints: Endpoints, prefixes: tuple[str, ...] = ("",)) -> None:
        self.conn = Connection(endpoints, "test")
        self._prefixes = prefixes
        self.seen: list[Envelope[Any]] = []
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self.conn.start(self._on, subscribe=self._prefixes)

    async def close(self) -> None:
        await self.conn.close()

    def _on(self, env: Envelope[Any], queue: str | None) -> None:
        self.seen.append(env)
        self._changed.set()

    async def expect(
        self, kind: type[Message], where: Callable[[Any], bool] = lambda b: True, timeout: float = 10.0
    ) -> Envelope[Any]:
        """The first message (seen so far or arriving) of ``kind`` whose body satisfies ``where``."""
        found = await self.expect_n(kind, 1, where, timeout)
        return found[0]

    async def expect_n(
        self, kind: type[Message], n: int, where: Callable[[Any], bool] = lambda b: True, timeout: float = 10.0
    ) -> list[Envelope[Any]]:
        async def scan() -> list[Envelope[Any]]:
            while True:
                hits = [e for e in self.seen if isinstance(e.body, kind) and where(e.body)]
                if len(hits) >= n:
                    return hits[:n]
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)

    def count(self, kind: type[Message], where: Callable[[Any], bool] = lambda b: True) -> int:
        return sum(1 for e in self.seen if isinstance(e.body, kind) and where(e.body))
