"""Tasks survive what goes wrong: a dead executor, a client that leaves, a slow model, a cancel."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from actors import Host
from actors.analyzer import Analyzer
from actors.executor import Executor
from actors.planner import Planner
from actors.tasks import TaskManager
from bus.system import Ready
from bus.tasks import Claimed
from tests.fakes.openai_server import Behaviour
from tests.helpers import Collector, spawn, stop
from tests.tasks.conftest import TaskSystem, plan
from tests.tasks.test_flow import REVENUE_SQL
from web.keys import HUB


@pytest.fixture
def task_settings() -> dict[str, str]:
    return {"GREENROOM_SSE_KEEPALIVE": "0.3", "GREENROOM_HEARTBEAT_TIMEOUT": "1.5", "GREENROOM_TASK_TIMEOUT": "30"}


async def _executor_process(watch: Collector, name: str) -> object:
    proc = await spawn("actor", "executor", "--name", name)
    await watch.expect(Ready, lambda b: b.name == name, timeout=30)
    return proc


async def test_an_executor_killed_mid_task_is_replaced_and_the_task_retried(task_stack: TaskSystem) -> None:
    tasks = task_stack
    watch = Collector(tasks.chat.endpoints)
    await watch.start()
    first = await _executor_process(watch, "executor-a")
    second = None
    try:
        tasks.brain.say("planner", plan("analytics"))
        tasks.brain.act("sql", Behaviour(text=REVENUE_SQL, delay=1.0))  # killed while this streams
        tasks.brain.say("sql", REVENUE_SQL)
        tasks.brain.say("summary", "Revenue grew.")
        task_id = await tasks.submit("What was revenue by month?")
        seen = await tasks.events(task_id, stop=lambda e: e["step"] == "generate_sql")
        claim = await watch.expect(Claimed, lambda b: b.stage == "executor")
        assert claim.body.pid == first.pid  # type: ignore[attr-defined]
        os.kill(claim.body.pid, signal.SIGKILL)
        second = await _executor_process(watch, "executor-b")
        rest = await tasks.events(task_id, last_event_id=seen[-1]["id"])
    finally:
        await stop(first)  # type: ignore[arg-type]
        if second is not None:
            assert await stop(second) == 0  # type: ignore[arg-type]
        await watch.close()
    retry = next(e for e in rest if e["step"] == "retry")
    assert retry["category"] == "error" and "executor working on this task stopped" in retry["message"]
    after = rest[rest.index(retry) + 1 :]
    assert [e["step"] for e in after][:2] == ["fetch_context", "fetch_context"]  # the stage starts again
    assert rest[-1]["status"] == "done"
    task = await tasks.task(task_id)
    assert task["state"] == "done" and task["attempt"] == 2 and task["result"]["table"]["row_count"] > 20


@pytest.mark.parametrize("task_settings", [{"GREENROOM_HEARTBEAT_TIMEOUT": "1.5", "GREENROOM_TASK_RETRIES": "0"}])
async def test_a_task_whose_worker_dies_with_no_retries_left_fails_cleanly(task_stack: TaskSystem) -> None:
    tasks = task_stack
    watch = Collector(tasks.chat.endpoints)
    await watch.start()
    proc = await _executor_process(watch, "executor-a")
    try:
        tasks.brain.say("planner", plan("analytics"))
        tasks.brain.act("sql", Behaviour(text=REVENUE_SQL, delay=1.0))
        task_id = await tasks.submit("What was revenue by month?")
        claim = await watch.expect(Claimed, lambda b: b.stage == "executor")
        os.kill(claim.body.pid, signal.SIGKILL)
        events = await tasks.events(task_id)
    finally:
        await stop(proc)  # type: ignore[arg-type]
        await watch.close()
    assert events[-2]["_event"] == "error" and events[-2]["data"]["code"] == "worker_lost"
    assert events[-1]["step"] == "end" and events[-1]["status"] == "failed"
    assert (await tasks.task(task_id))["state"] == "failed"


async def test_a_client_leaving_the_stream_cancels_nothing_and_leaks_nothing(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say("sql", REVENUE_SQL, delay=0.1)
    tasks.brain.say("summary", "Revenue grew.")
    task_id = await tasks.submit("What was revenue by month?")
    hub = tasks.chat.app[HUB]
    first = await tasks.events(task_id, stop=lambda e: e["id"] == 2)
    assert len(first) == 2
    rest = await tasks.events(task_id, last_event_id=2)  # the task went on while nobody watched
    assert rest[-1]["status"] == "done"
    assert hub.task_watchers == {}


async def test_an_idle_stream_gets_keep_alive_comments(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say("sql", REVENUE_SQL, delay=0.1)  # ~2 s of silence while the query is written
    tasks.brain.say("summary", "Revenue grew.")
    task_id = await tasks.submit("What was revenue by month?")
    comments = 0
    async with tasks.http.get(f"{tasks.url}/api/stream/{task_id}") as resp:
        async for raw in resp.content:
            comments += raw == b": keep-alive\n"
    assert comments >= 2


@pytest.mark.parametrize("task_settings", [{"GREENROOM_TASK_TIMEOUT": "1", "GREENROOM_SSE_KEEPALIVE": "5"}])
async def test_a_task_that_takes_too_long_ends_with_a_timeout_error_event(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say("sql", REVENUE_SQL, delay=0.5)
    task_id = await tasks.submit("What was revenue by month?")
    events = await tasks.events(task_id)
    error, end = events[-2], events[-1]
    assert error["_event"] == "error" and error["data"]["code"] == "timeout"
    assert error["message"] == "Query took too long. Try a more specific question."
    assert end["status"] == "failed"
    assert (await tasks.task(task_id))["error"]["code"] == "timeout"


async def test_a_cancelled_task_stops_and_says_so(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say("sql", REVENUE_SQL, delay=0.5)
    task_id = await tasks.submit("What was revenue by month?")
    await tasks.events(task_id, stop=lambda e: e["step"] == "generate_sql")
    async with tasks.http.post(f"{tasks.url}/api/v1/tasks/{task_id}/cancel") as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "cancelled"
    events = await tasks.events(task_id, last_event_id=0)
    assert events[-1]["step"] == "end" and events[-1]["status"] == "cancelled"
    assert not any(e["step"] == "execute_sql" for e in events)  # the executor was stopped
    async with tasks.http.post(f"{tasks.url}/api/v1/tasks/{task_id}/cancel") as resp:
        assert resp.status == 409 and (await resp.json())["error"]["code"] == "task_finished"


async def test_several_executors_share_the_tasks(tasks: TaskSystem) -> None:
    second = Host(tasks.chat.endpoints, [Executor], name="executor-2")
    await second.start()
    watch = Collector(tasks.chat.endpoints, ("task.claimed",))
    await watch.start()
    try:
        tasks.brain.say("planner", plan("analytics"))
        tasks.brain.say("sql", REVENUE_SQL, delay=0.02)
        tasks.brain.say("summary", "Revenue grew.")
        ids = await asyncio.gather(*(tasks.submit(f"What was revenue by month? ({i})") for i in range(8)))
        ends = await asyncio.gather(*(tasks.events(t, stop=lambda e: e["step"] == "end") for t in ids))
        claims = await watch.expect_n(Claimed, 8, lambda b: b.stage == "executor")
    finally:
        await watch.close()
        await second.stop()
    assert all(e[-1]["status"] == "done" for e in ends)
    assert len({c.header.src for c in claims}) == 2  # both took some


async def test_a_task_manager_restart_picks_open_tasks_up_again(tasks: TaskSystem) -> None:
    manager_host = tasks.chat.hosts[-1]
    assert "tasks" in manager_host.actor_names
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.act("sql", Behaviour(text=REVENUE_SQL, delay=0.3))
    tasks.brain.say("sql", REVENUE_SQL)
    tasks.brain.say("summary", "Revenue grew.")
    task_id = await tasks.submit("What was revenue by month?")
    seen = await tasks.events(task_id, stop=lambda e: e["step"] == "generate_sql")
    await manager_host.stop()  # the manager goes away mid-task…
    restarted = Host(tasks.chat.endpoints, [TaskManager, Planner, Analyzer])
    await restarted.start()  # …and its successor finds the task open in the database
    tasks.chat.hosts[-1] = restarted
    rest = await tasks.events(task_id, last_event_id=seen[-1]["id"])
    retry = next(e for e in rest if e["step"] == "retry")
    assert "Greenroom restarted while the executor was working" in retry["message"]
    assert rest[-1]["status"] == "done"
    ids = [e["id"] for e in seen + rest]
    assert ids == list(range(1, len(ids) + 1))  # numbering went on where it was
    assert (await tasks.task(task_id))["attempt"] == 2
