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


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


async def spawn(*args: str, env: dict[str, str] | None = None, stderr: Any = None) -> asyncio.subprocess.Process:
    """Start ``python run.py ARGS`` with pipes (or ``stderr`` to a file), in the repository root."""
    import os
    import sys

    full_env = {**os.environ, "GREENROOM_LOG_FORMAT": "json", **(env or {})}
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), *args, cwd=ROOT, env=full_env,
        stdout=asyncio.subprocess.PIPE, stderr=stderr if stderr is not None else asyncio.subprocess.PIPE,
    )  # fmt: skip


async def read_until(stream: asyncio.StreamReader | None, marker: str, timeout: float = 15.0) -> list[str]:
    """Lines read until one containing ``marker`` (included)."""
    assert stream is not None
    lines: list[str] = []

    async def scan() -> list[str]:
        while True:
            raw = await stream.readline()
            if not raw:
                raise EOFError(f"stream ended before {marker!r}; got: {lines[-5:]}")
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            if marker in lines[-1]:
                return lines

    return await asyncio.wait_for(scan(), timeout)


async def process_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait (no polling) until ``pid`` exits, through a pidfd; any process, not only children."""
    import os

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, exited)
    try:
        await asyncio.wait_for(gone, timeout)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def stop(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> int:
    """SIGTERM and wait; kill if it overstays (and fail the caller's expectations)."""
    if proc.returncode is None:
        proc.terminate()
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
