"""The edge's view of the bus: routes chat events to the sockets watching each session.

One sender queue per socket, bounded: a browser that stops reading is disconnected
rather than allowed to grow memory without limit. Deltas of a turn older than the
session's newest are dropped, so nothing stale reaches the screen after an interrupt.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bus import Connection, Envelope
from bus.chat import Accepted, AgentNotification, ChatError, Delta, Emotion, Reply, Status, TaskResult, UserText
from bus.system import Heartbeat, Interrupt, Ready
from bus.tasks import TaskProgress
from bus.telemetry import Mark, MetricsSnapshot
from bus.voice import AudioOut, Transcript

SEND_QUEUE = 2048
RECENT_REPLIES = 4096
TASK_QUEUE = 256
RESYNC: dict[str, Any] = {"resync": True}
"""Put in a task stream's queue when it overflowed: the stream fetches what it missed."""


@dataclass(eq=False)
class Client:
    """One WebSocket connection."""

    id: str
    character: str
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE))
    session: str | None = None
    overflowed: bool = False

    def send(self, frame: dict[str, Any]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed = True  # the sender closes the socket
            self.queue.get_nowait()
            self.queue.put_nowait(None)


class Hub:
    def __init__(self, conn: Connection, required: Iterable[str], heartbeat_timeout: float) -> None:
        self.conn = conn
        self.required = frozenset(required)
        self._timeout = heartbeat_timeout
        self.sessions: dict[str, set[Client]] = {}
        self.turns: dict[str, int] = {}
        self.replying: dict[str, int] = {}  # session -> turn whose reply is streaming (text or audio)
        self.speaking: dict[str, int] = {}  # session -> turn whose audio is streaming
        self.seen: dict[str, float] = {}
        self._replies: OrderedDict[tuple[str, int], Envelope[Any]] = OrderedDict()
        self._waiters: dict[tuple[str, int], asyncio.Future[Envelope[Any]]] = {}
        self.task_watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self.metrics: MetricsSnapshot | None = None
        """The telemetry sink's latest counters (for ``/metrics``)."""
        self.metrics_at = 0.0
        self._marked: dict[str, int] = {}  # session -> last turn whose first frame was marked
        self._marks: set[asyncio.Task[Any]] = set()
        self.stats = {"frames_out": 0, "stale_dropped": 0, "slow_clients": 0, "sse_resync": 0}

    # -- task streams -----------------------------------------------------------------------

    def watch_task(self, task_id: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(TASK_QUEUE)
        self.task_watchers.setdefault(task_id, set()).add(queue)
        return queue

    def unwatch_task(self, task_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        watchers = self.task_watchers.get(task_id)
        if watchers is not None:
            watchers.discard(queue)
            if not watchers:
                del self.task_watchers[task_id]

    def _task_event(self, task_id: str, event: dict[str, Any]) -> None:
        for queue in self.task_watchers.get(task_id, ()):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a slow reader: it re-reads the log from where it is
                self.stats["sse_resync"] += 1
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(RESYNC)

    # -- attachment -----------------------------------------------------------------------

    def attach(self, client: Client, session: str) -> None:
        self.detach(client)
        client.session = session
        self.sessions.setdefault(session, set()).add(client)

    def detach(self, client: Client) -> None:
        if client.session is not None:
            watchers = self.sessions.get(client.session)
            if watchers is not None:
                watchers.discard(client)
                if not watchers:
                    del self.sessions[client.session]
                    self.turns.pop(client.session, None)
                    self.replying.pop(client.session, None)
                    self.speaking.pop(client.session, None)
            client.session = None

    # -- health -----------------------------------------------------------------------------

    def missing(self) -> list[str]:
        now = time.monotonic()
        return sorted(a for a in self.required if now - self.seen.get(a, -1e9) > self._timeout)

    # -- replies for REST -------------------------------------------------------------------

    async def reply_for(self, session: str, turn: int, timeout: float) -> Envelope[Any]:
        key = (session, turn)
        if key in self._replies:
            return self._replies[key]
        fut = self._waiters.setdefault(key, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            if fut.done() or not fut.cancelled():
                self._waiters.pop(key, None)

    # -- bus -> sockets ---------------------------------------------------------------------

    def on_message(self, env: Envelope[Any], queue: str | None) -> None:
        body = env.body
        if isinstance(body, Heartbeat | Ready | MetricsSnapshot | TaskProgress):
            self._system(env)
            return
        session = env.session
        if isinstance(body, Reply):
            self._remember(env)
        watchers = self.sessions.get(session)
        if isinstance(body, Accepted | Interrupt):
            if env.turn > self.turns.get(session, 0) and watchers:
                self.turns[session] = env.turn
                if isinstance(body, Interrupt) and self.replying.get(session, env.turn) < env.turn:
                    del self.replying[session]  # the browser must stop what it is playing now
                    self.speaking.pop(session, None)
                    self._broadcast(watchers, {"type": "interrupt", "turn": env.turn})
            return
        if not watchers:
            return
        if env.turn < self.turns.get(session, 0) and isinstance(body, Delta | Emotion | AudioOut):
            self.stats["stale_dropped"] += 1
            return
        frame: dict[str, Any]
        match body:
            case Delta():
                self.replying[session] = env.turn
                self._broadcast(watchers, {"type": "text", "text": body.text})
                self._mark_first(session, env.turn)  # after: the words go out before the bookkeeping
                return
            case AudioOut():
                self._audio_out(env, watchers)
                return
            case Transcript():
                if body.final:
                    return  # the final one arrives as the user's message (chat.user_text)
                frame = {"type": "transcript", "speaker": "user", "text": body.text, "isFinal": False}
            case Emotion():
                frame = {"type": "emotion", "emotion": body.emotion}
            case Status():
                frame = {"type": "status", "status": body.status, "message": body.message}
            case ChatError():
                frame = {"type": "error", "code": body.code, "message": body.message}
            case Reply():
                if self.replying.get(session) == env.turn and self.speaking.get(session) != env.turn:
                    del self.replying[session]
                frame = {"type": "transcript", "speaker": "assistant", "text": body.text, "isFinal": True,
                         "emotion": body.emotion, "interrupted": body.interrupted, "turn": env.turn}  # fmt: skip
            case AgentNotification():
                frame = {"type": "agent_notification", "text": body.text, "source": body.source,
                         "status": body.status, "task_id": body.task_id, "step": body.step,
                         "progress": body.progress}  # fmt: skip
            case TaskResult():
                frame = {"type": "agent_notification", "text": body.answer, "source": "analyzer",
                         "status": "result", "state": body.state, "task_id": body.task_id, "progress": 100}  # fmt: skip
            case UserText():
                frame = {"type": "transcript", "speaker": "user", "text": body.text, "isFinal": True, "turn": env.turn}
                self._broadcast((c for c in watchers if c.id != body.client), frame)
                return
            case _:
                return
        self._broadcast(watchers, frame)

    def _audio_out(self, env: Envelope[Any], watchers: set[Client]) -> None:
        session, body = env.session, env.body
        pcm = env.extra[0] if env.extra else b""
        if pcm:
            self.replying[session] = self.speaking[session] = env.turn
            frame = {"type": "audio", "audio_data": base64.b64encode(pcm).decode(), "turn": env.turn, "seq": body.seq}
            self._broadcast(watchers, frame)
            self._mark_first(session, env.turn)
        if body.last:  # the flush above was the turn's last audio
            if self.speaking.pop(session, None) is not None and self.replying.get(session) == env.turn:
                del self.replying[session]
            self._broadcast(watchers, {"type": "audio_end", "turn": env.turn})

    def _system(self, env: Envelope[Any]) -> None:
        body = env.body
        if isinstance(body, Heartbeat | Ready):
            now = time.monotonic()
            for actor in body.actors:
                self.seen[actor] = now
        elif isinstance(body, MetricsSnapshot):
            self.metrics, self.metrics_at = body, time.monotonic()
        elif isinstance(body, TaskProgress):
            self._task_event(env.session, body.event)

    def _mark_first(self, session: str, turn: int) -> None:
        """The first frame of a turn's reply is going out: a hop for the latency ledger."""
        if self._marked.get(session, 0) >= turn:
            return
        self._marked[session] = turn
        if len(self._marked) > RECENT_REPLIES:
            self._marked.pop(next(iter(self._marked)))
        task = asyncio.get_running_loop().create_task(
            self.conn.publish(Mark("first_frame_sent", time.time()), session=session, turn=turn)
        )
        self._marks.add(task)
        task.add_done_callback(self._marks.discard)

    def _broadcast(self, clients: Iterable[Client], frame: dict[str, Any]) -> None:
        for client in clients:
            client.send(frame)
            self.stats["frames_out"] += 1
            if client.overflowed:
                self.stats["slow_clients"] += 1

    def _remember(self, env: Envelope[Any]) -> None:
        key = (env.session, env.turn)
        self._replies[key] = env
        if len(self._replies) > RECENT_REPLIES:
            self._replies.popitem(last=False)
        fut = self._waiters.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(env)
