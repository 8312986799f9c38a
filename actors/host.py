"""The actor host: runs one or more actors in this process over one bus connection.

It subscribes for its actors, routes each message to the right (actor, session)
lane, applies interrupts before anything queued, pulls work with flow control,
publishes heartbeats, and stops cleanly: in-flight work gets a grace period,
then ``on_stop``, then ``sys.stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

import structlog

from actors.actor import Actor, ActorBus
from actors.lanes import Lane
from bus import Connection, Endpoints, Envelope, type_prefix
from bus.envelope import Header
from bus.system import Heartbeat, Interrupt, Ready, Shutdown, Stopped
from config.process import settle_heap

log = structlog.get_logger("greenroom.host")
MAX_FLOORS = 100_000
BACKLOG_HIGH = 4096  # queued messages across lanes before we stop reading events
BACKLOG_LOW = 1024  # ... and resume
EARLY_LIMIT = 10_000  # events held while the actors start


class Host:
    def __init__(
        self,
        endpoints: Endpoints,
        actors: Sequence[type[Actor]],
        *,
        name: str | None = None,
        heartbeat: float = 1.0,
        lane_limit: int = 10_000,
        grace: float = 2.0,
    ) -> None:
        if not actors:
            raise ValueError("a host needs at least one actor")
        self.name = name or "+".join(a.name for a in actors)
        self.conn = Connection(endpoints, self.name)
        # Events our actors publish reach our other actors at once (same order, no broker
        # round trip); the copy the bus brings back is recognised by its src and skipped.
        self._suffix = "@" + self.conn.src.split("@")[1]
        self.actors = [
            cls(ActorBus(self.conn, f"{cls.name}{self._suffix}", self._event, self._local_work)) for cls in actors
        ]
        self.stats: dict[str, int] = dict.fromkeys(
            ("handled", "failed", "cancelled", "stale", "dropped_overflow", "work_local", "unwanted"), 0
        )
        self.stopped = asyncio.Event()
        self._heartbeat = heartbeat
        self._lane_limit = lane_limit
        self._grace = grace
        self._by_type: dict[str, list[Actor]] = {}
        self._by_queue: dict[str, Actor] = {}
        self._lanes: dict[tuple[int, str], Lane] = {}
        self._floors: dict[str, int] = {}
        self._work: dict[str, str] = {}  # id of queue message in flight -> queue
        self._inflight: dict[str, int] = {}
        self._paused: set[str] = set()
        self._backlog = 0
        self._events_paused = False
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._started = time.monotonic()
        self._beat: asyncio.Task[None] | None = None
        self._early: list[Envelope[Any]] | None = None
        for actor in self.actors:
            for kind in actor.handles:
                self._by_type.setdefault(self.conn.registry.spec_of(kind).wire, []).append(actor)
            for queue in actor.queues:
                if queue in self._by_queue:
                    raise ValueError(f"queue {queue!r} pulled by two actors in one host")
                self._by_queue[queue] = actor
                self._inflight[queue] = 0

    @property
    def actor_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.actors)

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Start, run until ``sys.shutdown`` or :meth:`request_stop`, then stop cleanly."""
        await self.start()
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def start(self, timeout: float = 30.0) -> None:
        structlog.contextvars.bind_contextvars(process=self.name)
        topics = {type_prefix(w) for w in self._by_type}
        topics |= {type_prefix(self.conn.registry.spec_of(k).wire) for k in (Interrupt, Shutdown)}
        # Events that arrive while the actors start wait for them; work queues are pulled only
        # once every actor is ready, so no work reaches an actor still starting (or waits on it:
        # until then, other replicas take it).
        self._early = []
        await self.conn.start(self._route, subscribe=sorted(topics), skip=self._delivered, timeout=timeout)
        for actor in self.actors:
            await actor.on_start()
        early, self._early = self._early, None
        for env in early:
            self._route(env, None)
        for queue in self._by_queue:
            self.conn.pull(queue)
        settle_heap()
        self._beat = asyncio.create_task(self._beat_loop(), name=f"{self.name}:heartbeat")
        await self.conn.publish(Ready(self.name, os.getpid(), self.actor_names))
        log.info("actors ready", actors=self.actor_names, pid=os.getpid(), src=self.conn.src)

    async def stop(self, reason: str = "shutdown") -> None:
        if self._stopping:
            await self.stopped.wait()
            return
        self._stopping = True
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for actor in self.actors:
            try:
                await actor.on_stop()
            except Exception:
                log.exception("on_stop failed", actor=actor.name)
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        with contextlib.suppress(Exception):
            await self.conn.publish(Stopped(self.name, os.getpid(), reason))
        await self.conn.close()
        log.info("actors stopped", actors=self.actor_names, reason=reason)
        self.stopped.set()

    # -- routing (called synchronously for each decoded message) ----------------------------

    def _route(self, env: Envelope[Any], queue: str | None) -> None:
        if self._stopping:
            return
        if self._early is not None:  # the actors are still starting
            if len(self._early) < EARLY_LIMIT:
                self._early.append(env)
            else:
                self.stats["dropped_overflow"] += 1
            return
        if queue is not None:
            self._take_work(env, queue)
            return
        self._event(env)  # (what our own actors published the connection skipped: see _delivered)

    def _delivered(self, header: Header) -> bool:
        """Whether an event reached this host's actors without the bus: the broker's copy of a
        work item (seq 0; its worker got the item itself), or an event one of them published
        (delivered locally when it was). Its body is then never decoded: a chat turn's own
        events (the turn with its history, the model request, sentences, the reply) came
        back to this process only to be dropped, while the turn's model request was in flight."""
        src = header.src
        return header.seq == 0 or (src.endswith(self._suffix) and src != self.conn.src)

    def _event(self, env: Envelope[Any]) -> None:
        if self._stopping:
            return
        body = env.body
        if isinstance(body, Interrupt):
            self._interrupt(env.session, env.turn)
        elif isinstance(body, Shutdown) and body.target in ("", self.name, *self.actor_names):
            log.info("shutdown requested on the bus", by=env.header.src, reason=body.reason)
            self._stop_requested.set()
        control = type(body).__control__
        for actor in self._by_type.get(env.type, ()):
            if actor.selective and (id(actor), env.session) not in self._lanes and not actor.wants(env):
                self.stats["unwanted"] += 1
                continue
            self._deliver(actor, env, control)

    def _deliver(self, actor: Actor, env: Envelope[Any], control: bool) -> bool:
        session = env.session
        if not control and not actor.accept_stale and env.turn < self._floors.get(session, 0):
            self.stats["stale"] += 1
            return False
        key = (id(actor), session)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(actor, session, self.stats, self._done, self._idle)
        lane.put(env, control, self._lane_limit)
        self._backlog += 1
        if self._backlog >= BACKLOG_HIGH and not self._events_paused:
            self._events_paused = True
            self.conn.pause_events()
        return True

    def _interrupt(self, session: str, turn: int) -> None:
        if turn <= self._floors.get(session, 0):
            return
        if len(self._floors) >= MAX_FLOORS:
            self._floors.pop(next(iter(self._floors)))
        self._floors[session] = turn
        for actor in self.actors:
            lane = self._lanes.get((id(actor), session))
            if lane is not None:
                lane.interrupt(turn)

    def _local_work(self, queue: str, env: Envelope[Any] | None) -> bool:
        """Without ``env``: whether a work item for ``queue`` can be taken here. With: take it."""
        actor = self._by_queue.get(queue)
        if actor is None or not actor.prefer_local or self._stopping or queue in self._paused:
            return False  # paused: work may be waiting in the broker, and new work must queue behind it
        if env is not None:
            self.stats["work_local"] += 1
            self._take_work(env, queue)
        return True

    def _take_work(self, env: Envelope[Any], queue: str) -> None:
        actor = self._by_queue[queue]
        if not self._deliver(actor, env, type(env.body).__control__):
            return
        self._work[env.id] = queue
        self._inflight[queue] += 1
        if self._inflight[queue] >= actor.max_inflight and queue not in self._paused:
            self._paused.add(queue)
            self.conn.pause(queue)

    def _done(self, lane: Lane, env: Envelope[Any]) -> None:
        self._backlog -= 1
        if self._events_paused and self._backlog <= BACKLOG_LOW and not self._stopping:
            self._events_paused = False
            self.conn.resume_events()
        queue = self._work.pop(env.id, None)
        if queue is None:
            return
        self._inflight[queue] -= 1
        if queue in self._paused and self._inflight[queue] < lane.actor.max_inflight // 2 + 1:
            self._paused.discard(queue)
            if not self._stopping:
                self.conn.resume(queue)

    def _idle(self, lane: Lane) -> None:
        key = (id(lane.actor), lane.session)
        if self._lanes.get(key) is lane and not len(lane):
            del self._lanes[key]

    # -- heartbeat --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, int]:
        stats = {**self.conn.stats, **self.stats}
        stats["lanes"] = len(self._lanes)
        stats["queued"] = sum(len(lane) for lane in self._lanes.values())
        return stats

    async def _beat_loop(self) -> None:
        pid = os.getpid()
        while True:
            await asyncio.sleep(self._heartbeat)
            uptime = time.monotonic() - self._started
            await self.conn.publish(Heartbeat(self.name, pid, self.actor_names, uptime, self.snapshot()))
