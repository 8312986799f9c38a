"""Task manager: owns tasks, their event logs and their stages.

Every task is persisted before any work starts and every event before anyone sees it; a
stream that reconnects with ``Last-Event-ID`` gets exactly what it missed. The manager
pushes each stage's work (planner -> executor -> analyzer, possibly more executor rounds)
and keeps the current work item in the task's row, so a task whose worker dies — or a
task this manager finds open after its own restart — is retried from its stage or failed
with a clear event. A task never stays "running" forever: it has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from actors.actor import Actor
from actors.db.pg import Database
from actors.db.task_store import TaskRow, TaskStore
from brain.tasks import TERMINAL, step_event
from bus import REGISTRY, Envelope, Message
from bus.chat import AgentNotification, TaskResult
from bus.system import Error, Heartbeat, Interrupt, ProcessEvent
from bus.tasks import (
    ANALYZER,
    EXECUTOR,
    PLANNER,
    Analyzed,
    AnalyzeTask,
    CancelTask,
    Claimed,
    Executed,
    ExecuteTask,
    GetTask,
    Planned,
    PlanTask,
    ReplayRequest,
    StageFailed,
    SubmitTask,
    TaskAccepted,
    TaskEvents,
    TaskExpired,
    TaskInfo,
    TaskProgress,
    TaskStep,
)  # fmt: skip
from config.settings import settings

MAX_QUERY = 4000
CACHED_TASKS = 10_000  # finished tasks kept in memory for fast replay
WATCH_EVERY = 0.25
_WORK: dict[str, type[Message]] = {PLANNER: PlanTask, EXECUTOR: ExecuteTask, ANALYZER: AnalyzeTask}


@dataclass(slots=True)
class Live:
    row: TaskRow
    next_event: int
    events: list[dict[str, Any]] = field(default_factory=list)
    worker_pid: int = 0
    claimed_at: float = 0.0
    started: float = field(default_factory=time.monotonic)
    expiring: bool = False

    @property
    def open(self) -> bool:
        return self.row.state not in TERMINAL


class TaskManager(Actor):
    name = "tasks"
    handles = (
        SubmitTask, Claimed, TaskStep, Planned, Executed, Analyzed, StageFailed, TaskExpired, ReplayRequest,
        GetTask, CancelTask, ProcessEvent, Heartbeat,
    )  # fmt: skip
    interrupt_cancels = False  # its own work is short and must not be lost
    accept_stale = True  # it decides what is stale (by attempt)

    async def on_start(self) -> None:
        cfg = self.cfg = settings()
        self._db = Database()
        self._pool = await self._db.open(cfg.database_url, cfg.data_dir, sync_commit=cfg.db_sync_commit)
        self.store = TaskStore(self._pool)
        self.live: OrderedDict[str, Live] = OrderedDict()
        self.beats: dict[int, float] = {}
        for row in await self.store.open_tasks():  # left open by an earlier run of this manager
            live = self._keep(Live(row, await self.store.last_event_id(row.id) + 1))
            await self._retry(live, f"Greenroom restarted while the {row.stage} was working")
        self._watch = asyncio.create_task(self._watchdog())

    async def on_stop(self) -> None:
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        await self._pool.close()

    # -- dispatch ---------------------------------------------------------------------------

    async def on_message(self, env: Envelope[Any]) -> None:
        body = env.body
        if isinstance(body, Heartbeat):
            self.beats[body.pid] = time.monotonic()
            return
        if isinstance(body, ProcessEvent):
            if body.event in ("exited", "hung") and body.pid:
                for task_id, live in list(self.live.items()):
                    if live.open and live.worker_pid == body.pid:
                        await self.bus.publish(TaskExpired("worker_lost", body.pid), session=task_id)
            return
        if isinstance(body, SubmitTask):
            await self._submit(env)
            return
        if isinstance(body, ReplayRequest):
            await self._replay(env, body)
            return
        found = await self._live(env.session)
        if found is None:
            if isinstance(body, GetTask | CancelTask):
                await self.bus.publish(TaskInfo(False), cause=env)
            return
        await self._handle(found, env)

    async def _handle(self, live: Live, env: Envelope[Any]) -> None:
        body = env.body
        match body:
            case GetTask():
                await self.bus.publish(TaskInfo(True, live.row.public()), cause=env)
            case CancelTask():
                changed = live.open
                if changed:
                    await self._stop_work(live)
                    await self._finish(live, "cancelled", error={"code": "cancelled", "message": body.reason})
                await self.bus.publish(TaskInfo(True, live.row.public(), changed), cause=env)
            case TaskExpired():
                await self._expired(live, body)
            case _ if env.turn != live.row.attempt or not live.open:
                return  # output of an attempt that was retried, or of a finished task
            case Claimed():
                live.worker_pid, live.claimed_at = body.pid, time.monotonic()
                if live.row.state == "queued":
                    live.row.state = "running"
                    await self.store.save(live.row)
            case TaskStep():
                await self._emit(live, body.step, body.status, body.message, body.data, source=env.header.src)
            case Planned():
                if body.workflow == "answer":
                    await self._stage(live, ANALYZER, AnalyzeTask(live.row.query, body.workflow))
                else:
                    await self._stage(live, EXECUTOR, ExecuteTask(live.row.query, body.workflow, body.steps))
            case Executed():
                work = live.row.work or {}
                depth = int(work.get("body", {}).get("depth", 1))
                workflow = str(work.get("body", {}).get("workflow", "tools"))
                await self._stage(
                    live, ANALYZER, AnalyzeTask(live.row.query, workflow, depth, body.results, body.table)
                )
            case Analyzed():
                await self._analyzed(live, body)
            case StageFailed():
                await self._finish(live, "failed", error={"code": body.code, "message": body.message})

    # -- stages -----------------------------------------------------------------------------

    async def _submit(self, env: Envelope[Any]) -> None:
        body: SubmitTask = env.body
        task_id = env.session
        if not task_id or not body.query.strip() or len(body.query) > MAX_QUERY:
            why = "a task needs an id (the message's session)" if not task_id else "the query is empty or too long"
            await self.bus.publish(Error("bad_task", why, ref=env.id), cause=env)
            return
        if await self._live(task_id) is not None:  # the same submission again: same answer
            await self.bus.publish(TaskAccepted(task_id), cause=env)
            return
        work = {"stage": PLANNER, "body": {"query": body.query}}
        row = await self.store.create(task_id, body.query, body.user_id, body.chat_session, work)
        live = self._keep(Live(row, 1))
        await self._emit(live, "classify_intent", "running")
        await self.bus.publish(TaskAccepted(task_id), cause=env)
        await self.bus.push(PLANNER, PlanTask(body.query), session=task_id, turn=row.attempt)

    async def _stage(self, live: Live, stage: str, work: Message) -> None:
        """Persist the next stage's work item, then hand it over."""
        live.row.stage, live.row.work = stage, {"stage": stage, "body": REGISTRY.spec_of(type(work)).to_body(work)}
        live.worker_pid = 0
        await self.store.save(live.row)
        await self.bus.push(stage, work, session=live.row.id, turn=live.row.attempt)

    async def _analyzed(self, live: Live, body: Analyzed) -> None:
        work = (live.row.work or {}).get("body", {})
        depth = int(work.get("depth", 1))
        if body.more_steps and depth < self.cfg.max_tool_depth:
            results = tuple(work.get("results", ()))
            await self._stage(live, EXECUTOR, ExecuteTask(live.row.query, "tools", body.more_steps, depth + 1, results))
            return
        table = work.get("table")
        result = {"answer": body.answer, "chart": body.chart, "table": table, "tools": list(work.get("results", ()))}
        await self._finish(live, "done", result=result)

    async def _expired(self, live: Live, body: TaskExpired) -> None:
        live.expiring = False
        if not live.open:
            return
        if body.reason == "timeout":
            await self._stop_work(live)
            message = "Query took too long. Try a more specific question."
            await self._finish(live, "failed", error={"code": "timeout", "message": message})
        elif body.pid == live.worker_pid:
            await self._retry(live, f"The {live.row.stage} working on this task stopped")

    async def _retry(self, live: Live, why: str) -> None:
        row = live.row
        if row.work is None or row.attempt > self.cfg.task_retries:
            await self._stop_work(live)
            message = f"{why}, and it has been retried {row.attempt - 1} time(s) already."
            await self._finish(live, "failed", error={"code": "worker_lost", "message": message})
            return
        await self._stop_work(live)  # the old attempt's leftovers become stale
        row.attempt += 1
        await self._emit(live, "retry", "running", f"{why}; trying again (attempt {row.attempt}).")
        await self.store.save(row)
        stage = str(row.work["stage"])
        spec = REGISTRY.spec_of(_WORK[stage])
        work = spec.from_body(row.work["body"], spec.version)
        live.worker_pid = 0
        await self.bus.push(stage, work, session=row.id, turn=row.attempt)

    async def _stop_work(self, live: Live) -> None:
        await self.bus.publish(Interrupt("task " + live.row.state), session=live.row.id, turn=live.row.attempt + 1)

    async def _finish(
        self, live: Live, state: str, *, result: dict[str, Any] | None = None, error: dict[str, str] | None = None
    ) -> None:
        row = live.row
        if error is not None and state == "failed":
            await self._emit(live, "error", "failed", error["message"], {"code": error["code"]})
        row.state, row.result, row.error, row.work = state, result, error, None
        if state == "done":
            row.progress = 100
        await self.store.save(row)  # the outcome is stored before the stream says "end"
        data: dict[str, Any] = {"state": state}
        if result is not None:
            data["answer"] = result.get("answer", "")
        message = {"done": "Done!", "cancelled": "Cancelled."}.get(state, "The task failed.")
        await self._emit(live, "end", state, message, data, final=True)
        if row.chat_session:
            answer = result.get("answer", "") if result else (error or {}).get("message", "")
            await self.bus.publish(TaskResult(row.id, row.query, state, answer), session=row.chat_session)

    # -- events -----------------------------------------------------------------------------

    async def _emit(
        self, live: Live, step: str, status: str, message: str = "", data: dict[str, Any] | None = None,
        *, final: bool = False, source: str = "",
    ) -> None:  # fmt: skip
        row = live.row
        if data and isinstance(data.get("progress"), int):  # a worker's own measure (tool i of n)
            data = dict(data)
            row.progress = max(row.progress, min(99, data.pop("progress")))
        event = step_event(step, status, message=message, progress=row.progress, data=data)
        event["id"] = live.next_event
        event["ts"] = round(time.time(), 3)
        live.next_event += 1
        row.progress = event["progress"]
        await self.store.add_event(row.id, event["id"], event)
        live.events.append(event)
        await self.bus.publish(TaskProgress(event, final), session=row.id, turn=row.attempt)
        if row.chat_session:
            who = source.split("@", 1)[0] or "tasks"
            note = AgentNotification(event["message"], who, status, row.id, step, event["progress"])
            await self.bus.publish(note, session=row.chat_session)

    async def _replay(self, env: Envelope[Any], body: ReplayRequest) -> None:
        """Outside the task's lane: only persisted events are read (memory has nothing else).

        "Finished" means the ``end`` event exists, not that the state says so: the state is
        saved a moment before the ``end`` event is, and a replay may fall in between."""
        after = max(0, body.after)
        since = max(0, after - 1)  # the client's own last event too: it says whether that was the end
        live = self.live.get(body.task_id)
        if live is not None and (not live.events or live.events[0]["id"] > since + 1):
            live = None  # this manager did not see the task's start: its log is in the database
        if live is not None:
            events = [e for e in live.events if e["id"] > since]
            owner, state = live.row.user_id, live.row.state
        else:
            row = await self.store.get(body.task_id)
            if row is None:
                await self.bus.publish(TaskEvents(False), cause=env)
                return
            events = await self.store.events(row.id, since)
            owner, state = row.user_id, row.state
        finished = bool(events) and events[-1]["step"] == "end"
        new = tuple(e for e in events if e["id"] > after)
        await self.bus.publish(TaskEvents(True, owner, state, new, finished), cause=env)

    # -- state ------------------------------------------------------------------------------

    def _keep(self, live: Live) -> Live:
        self.live[live.row.id] = live
        self.live.move_to_end(live.row.id)
        excess = len(self.live) - CACHED_TASKS
        if excess > 0:  # forget the oldest finished tasks; open ones stay (the watchdog needs them)
            gone: list[str] = []
            for task_id, kept in self.live.items():
                if not kept.open:
                    gone.append(task_id)
                    if len(gone) == excess:
                        break
            for task_id in gone:
                del self.live[task_id]
        return live

    async def _live(self, task_id: str) -> Live | None:
        live = self.live.get(task_id)
        if live is None and task_id:
            row = await self.store.get(task_id)
            if row is not None:
                live = self._keep(Live(row, await self.store.last_event_id(task_id) + 1))
        return live

    async def _watchdog(self) -> None:
        """Deadlines and silent workers; what to do is sent to the task's own lane."""
        while True:
            await asyncio.sleep(WATCH_EVERY)
            now = time.monotonic()
            for task_id, live in list(self.live.items()):
                if not live.open or live.expiring:
                    continue
                if now - live.started > self.cfg.task_timeout:
                    live.expiring = True
                    await self.bus.publish(TaskExpired("timeout"), session=task_id)
                elif live.worker_pid:
                    seen = max(self.beats.get(live.worker_pid, 0.0), live.claimed_at)
                    if now - seen > self.cfg.heartbeat_timeout:
                        live.expiring = True
                        await self.bus.publish(TaskExpired("worker_lost", live.worker_pid), session=task_id)
