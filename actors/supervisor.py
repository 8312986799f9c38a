"""The supervisor: starts actor-group processes, watches them, restarts the fallen.

A child that exits is restarted after an exponential backoff (reset once it has
run ``stable_after`` seconds). A child that was ready but stops sending
heartbeats for ``heartbeat_timeout`` is killed and restarted. Children run in
their own process group and die with the supervisor (``PR_SET_PDEATHSIG``), so
nothing outlives it. Every start, exit and restart is a ``sys.process`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bus import Connection, Envelope, type_prefix
from bus.system import Heartbeat, ProcessEvent, Ready

log = structlog.get_logger("greenroom.supervisor")
PARENT_ENV = "GREENROOM_PARENT_PID"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One supervised process."""

    name: str
    """Group name, also the host's name on the bus."""
    argv: tuple[str, ...]
    """Command line to start it."""


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.2
    """First restart delay, seconds."""
    factor: float = 2.0
    """Growth per consecutive failure."""
    max: float = 30.0
    """Longest delay."""
    stable_after: float = 30.0
    """A run this long resets the count."""

    def delay(self, failures: int) -> float:
        return float(min(self.max, self.base * self.factor ** max(0, failures - 1)))


@dataclass(slots=True)
class _Child:
    spec: ProcessSpec
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    ready: bool = False
    last_beat: float = 0.0
    restarts: int = 0
    failures: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        conn: Connection,
        *,
        backoff: Backoff = Backoff(),
        heartbeat_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self._children = {s.name: _Child(s) for s in specs}
        self._conn = conn
        self._backoff = backoff
        self._heartbeat_timeout = heartbeat_timeout
        self._stop_timeout = stop_timeout
        self._stopping = False
        self._watchdog: asyncio.Task[None] | None = None
        self.all_ready = asyncio.Event()

    @property
    def pids(self) -> dict[str, int]:
        return {n: c.proc.pid for n, c in self._children.items() if c.proc and c.proc.returncode is None}

    def on_message(self, env: Envelope[Any], queue: str | None) -> None:
        """Feed heartbeats and ready messages (wire this as the connection's handler)."""
        body = env.body
        if isinstance(body, Heartbeat | Ready):
            child = self._children.get(body.name)
            if child is None or child.proc is None or child.proc.pid != body.pid:
                return
            child.last_beat = time.monotonic()
            if isinstance(body, Ready) and not child.ready:
                child.ready = True
                log.info("process ready", name=body.name, pid=body.pid, actors=body.actors)
                if all(c.ready for c in self._children.values()):
                    self.all_ready.set()

    @staticmethod
    def topics() -> list[str]:
        return [type_prefix("sys.heartbeat"), type_prefix("sys.ready")]

    async def start(self) -> None:
        for child in self._children.values():
            child.task = asyncio.create_task(self._keep(child), name=f"supervise:{child.spec.name}")
        self._watchdog = asyncio.create_task(self._watch(), name="supervise:watchdog")
        if not self._children:
            self.all_ready.set()

    async def stop(self) -> None:
        """SIGTERM every child, wait ``stop_timeout``, SIGKILL what is left."""
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        procs = [c.proc for c in self._children.values() if c.proc and c.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in procs]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self._stop_timeout)
            for proc in procs:
                if proc.returncode is None:
                    log.warning("process did not stop in time, killing", pid=proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in procs))
            for w in pending:
                w.cancel()
        tasks = [c.task for c in self._children.values() if c.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *([self._watchdog] if self._watchdog else []), return_exceptions=True)
        for child in self._children.values():
            await self._event(child, "stopped", code=child.proc.returncode if child.proc else None)

    # -- internals --------------------------------------------------------------------------

    async def _keep(self, child: _Child) -> None:
        while not self._stopping:
            await self._spawn(child)
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping:  # stop() set it while we waited (mypy keeps the loop's narrowing across the await)
                return  # type: ignore[unreachable]
            ran = time.monotonic() - child.started
            child.failures = 1 if ran >= self._backoff.stable_after else child.failures + 1
            delay = self._backoff.delay(child.failures)
            log.warning("process exited, restarting", name=child.spec.name, pid=child.proc.pid, code=code,
                        delay=round(delay, 3))  # fmt: skip
            await self._event(child, "exited", code=code)
            await self._event(child, "restarting", delay=delay)
            await asyncio.sleep(delay)
            child.restarts += 1

    async def _spawn(self, child: _Child) -> None:
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        child.ready = False
        child.started = child.last_beat = time.monotonic()
        child.proc = await asyncio.create_subprocess_exec(*child.spec.argv, env=env, start_new_session=True)
        log.info("process started", name=child.spec.name, pid=child.proc.pid)
        await self._event(child, "started")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._heartbeat_timeout / 4))
            now = time.monotonic()
            for child in self._children.values():
                proc = child.proc
                if proc is None or proc.returncode is not None or not child.ready:
                    continue
                if now - child.last_beat > self._heartbeat_timeout:
                    log.error("process hung (no heartbeat), killing", name=child.spec.name, pid=proc.pid)
                    await self._event(child, "hung")
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()

    async def _event(self, child: _Child, event: str, *, code: int | None = None, delay: float = 0.0) -> None:
        pid = child.proc.pid if child.proc else 0
        with contextlib.suppress(Exception):
            await self._conn.publish(ProcessEvent(child.spec.name, event, pid, code, child.restarts, delay))


def die_with_parent() -> None:
    """In a supervised child: get SIGTERM when the supervisor dies, even by SIGKILL."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: fall back to the check below only
        pass
    if os.getppid() != int(parent):  # parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
