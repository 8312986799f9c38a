"""The whole seeds/004 flow over HTTP and SSE, with real PostgreSQL, bus and MCP server."""

from __future__ import annotations

import json

import asyncpg
import pytest

from actors.executor import Executor
from tests.fakes.openai_server import Behaviour
from tests.tasks.conftest import TaskSystem, plan

REVENUE_SQL = (
    "```sql\nSELECT to_char(date_trunc('month', ordered_at), 'YYYY-MM') AS month, sum(revenue) AS revenue\n"
    "FROM orders GROUP BY 1 ORDER BY 1;\n```"
)


async def test_analytics_question_streams_every_step_and_answers_with_a_chart(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say("sql", REVENUE_SQL)
    tasks.brain.say("summary", "Revenue grew every month.")
    task_id = await tasks.submit("What was revenue by month?", user_id="demo")
    events = await tasks.events(task_id)

    steps = [(e["step"], e["status"]) for e in events]
    assert steps == [
        ("classify_intent", "running"), ("classify_intent", "done"),
        ("fetch_context", "running"), ("fetch_context", "done"),
        ("generate_sql", "running"), ("generate_sql", "done"),
        ("validate_sql", "running"), ("validate_sql", "done"),
        ("execute_sql", "running"), ("execute_sql", "done"),
        ("analyze_results", "running"), ("analyze_results", "done"),
        ("generate_viz", "running"), ("generate_viz", "done"),
        ("end", "done"),
    ]  # fmt: skip
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    for e in events:
        assert set(e) >= {"step", "status", "message", "icon", "progress", "category"}
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 100
    by_step = {e["step"]: e for e in events}
    assert by_step["generate_sql"]["category"] == "action" and by_step["validate_sql"]["category"] == "check"
    assert by_step["fetch_context"]["message"] == "Looking up your data structure..."
    assert events[-1]["_event"] == "end" and events[-1]["data"]["answer"] == "Revenue grew every month."
    assert all(e["_event"] == "message" for e in events[:-1])

    task = await tasks.task(task_id)
    assert task["state"] == "done" and task["progress"] == 100 and task["user_id"] == "demo"
    result = task["result"]
    assert result["answer"] == "Revenue grew every month."
    table = result["table"]
    assert table["columns"] == ["month", "revenue"]
    conn = await asyncpg.connect(tasks.chat.database_url)
    expected = await conn.fetch(
        "SELECT to_char(date_trunc('month', ordered_at), 'YYYY-MM'), sum(revenue)"
        " FROM demo.orders GROUP BY 1 ORDER BY 1"
    )
    stored = await conn.fetch("SELECT id, event FROM task_events WHERE task_id = $1 ORDER BY id", task_id)
    await conn.close()
    assert table["rows"] == [[m, float(r) if r != int(r) else int(r)] for m, r in expected]
    assert result["chart"]["type"] == "line" and result["chart"]["labels"] == [r[0] for r in expected]
    assert [json.loads(r["event"])["step"] for r in stored] == [e["step"] for e in events]
    # the model was given the schema, and asked in the model's JSON-schema mode for the plan
    assert "demo.orders(" in tasks.brain.asked["sql"][0]["messages"][0]["content"]
    assert tasks.brain.asked["planner"][0]["response_format"]["type"] == "json_schema"


async def test_a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say("sql", REVENUE_SQL, delay=0.15)  # the task is still running when the client comes back
    tasks.brain.say("summary", "Revenue grew.")
    task_id = await tasks.submit("What was revenue by month?")
    first = await tasks.events(task_id, stop=lambda e: e["step"] == "generate_sql")
    assert first[-1]["status"] == "running"
    rest = await tasks.events(task_id, last_event_id=first[-1]["id"])
    ids = [e["id"] for e in first + rest]
    assert ids == list(range(1, len(ids) + 1))  # nothing twice, nothing missing
    assert rest[0]["id"] == first[-1]["id"] + 1 and rest[-1]["step"] == "end"
    # after the end: a late reconnect replays from the database; one that has it all just closes
    late = await tasks.events(task_id, last_event_id=3)
    assert [e["id"] for e in late] == ids[3:]
    assert await tasks.events(task_id, last_event_id=ids[-1]) == []
    # the query parameter works too (for clients that cannot set headers)
    async with tasks.http.get(f"{tasks.url}/api/stream/{task_id}?last_event_id={ids[-2]}") as resp:
        body = await resp.text()
    assert f"id: {ids[-1]}\nevent: end\n" in body and f"id: {ids[-2]}\n" not in body


async def test_unsafe_sql_is_refused_and_a_corrected_query_is_asked_for(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say("sql", "DELETE FROM orders", "SELECT count(*) AS orders FROM orders")
    tasks.brain.say("summary", "There are 6000 orders.")
    task_id = await tasks.submit("How many orders are there? Also delete them.")
    events = await tasks.events(task_id)
    refused = next(e for e in events if e["step"] == "validate_sql" and e["status"] == "failed")
    assert "DELETE is not allowed" in refused["message"] and refused["category"] == "error"
    fix = next(e for e in events if e["step"] == "analyze_error")
    assert fix["category"] == "error" and fix["icon"] == "🔧"
    assert events[-1]["status"] == "done"
    task = await tasks.task(task_id)
    assert task["result"]["table"]["rows"] == [[6000]]
    # the model was told why its first query was refused
    assert "DELETE is not allowed" in tasks.brain.asked["sql"][1]["messages"][-1]["content"]
    conn = await asyncpg.connect(tasks.chat.database_url)
    assert await conn.fetchval("SELECT count(*) FROM demo.orders") == 6000
    await conn.close()


async def test_a_task_whose_queries_stay_unsafe_fails_with_a_clear_error(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say(
        "sql", "SELECT 1; DROP TABLE demo.orders", "SELECT * FROM public.sessions", "SELECT * FROM pg_roles"
    )
    task_id = await tasks.submit("Show me the orders")
    events = await tasks.events(task_id)
    refusals = [e["message"] for e in events if e["step"] == "validate_sql" and e["status"] == "failed"]
    assert len(refusals) == 3
    assert "only one statement" in refusals[0] and "public" in refusals[1] and "pg_roles" in refusals[2]
    error, end = events[-2], events[-1]
    assert error["_event"] == "error" and error["data"]["code"] == "unsafe_sql" and error["category"] == "error"
    assert end["_event"] == "end" and end["status"] == "failed"
    task = await tasks.task(task_id)
    assert task["state"] == "failed" and task["error"]["code"] == "unsafe_sql"


async def test_a_query_the_database_rejects_goes_to_analyze_error_then_succeeds(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say("sql", "SELECT sum(amount) FROM orders", "SELECT sum(revenue) AS total FROM orders")
    tasks.brain.say("summary", "Total revenue is known.")
    task_id = await tasks.submit("What is the total revenue?")
    events = await tasks.events(task_id)
    failed = next(e for e in events if e["step"] == "execute_sql" and e["status"] == "failed")
    assert 'column "amount" does not exist' in failed["message"]
    assert events[-1]["status"] == "done"
    task = await tasks.task(task_id)
    assert task["result"]["chart"] is None  # one number: nothing to plot
    assert any(e["step"] == "generate_viz" and e["status"] == "skipped" for e in events)


async def test_analytics_runs_as_a_read_only_role_even_if_validation_were_bypassed(tasks: TaskSystem) -> None:
    assert tasks.executor is not None
    executor = tasks.executor.actors[0]
    assert isinstance(executor, Executor)
    for sql, why in [
        ("DELETE FROM orders", asyncpg.ReadOnlySQLTransactionError),
        ("SELECT * FROM public.sessions", asyncpg.InsufficientPrivilegeError),
        ("SELECT pg_sleep(10)", asyncpg.QueryCanceledError),
    ]:
        with pytest.raises(why):
            await executor._run(sql)


async def test_tools_from_a_real_mcp_server_answer_a_request(tasks: TaskSystem) -> None:
    path = str(tasks.files / "suppliers.md")
    tasks.brain.say("planner", plan("tools", ("files.read_text_file", {"path": path})))
    tasks.brain.say("tools", "Kettles come from Brightsteel Ltd.")
    task_id = await tasks.submit("Who supplies our kettles? Read the suppliers file.")
    events = await tasks.events(task_id)
    calls = [e for e in events if e["step"] == "call_tool"]
    assert [c["status"] for c in calls] == ["running", "done"]
    assert calls[1]["data"]["tool"] == "files.read_text_file" and "Brightsteel" in calls[1]["data"]["output"]
    assert events[-1]["data"]["answer"] == "Kettles come from Brightsteel Ltd."
    # the analyzer saw the file's contents, read by the real server
    assert "Brightsteel Ltd. (lead time 5 weeks)" in tasks.brain.asked["tools"][0]["messages"][0]["content"]
    task = await tasks.task(task_id)
    assert task["result"]["tools"][0]["ok"] is True


async def test_a_tool_error_is_a_result_and_the_analyzer_may_ask_for_another_round(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("tools", ("files.read_text_file", {"path": "/etc/passwd"})))
    listing = json.dumps({"path": str(tasks.files)})
    tasks.brain.act("tools", Behaviour(kind="tool_call", tool={"name": "files__list_directory", "arguments": listing}))
    tasks.brain.say("tools", "The folder holds returns.md and suppliers.md.")
    task_id = await tasks.submit("What files do we have?")
    events = await tasks.events(task_id)
    calls = [e for e in events if e["step"] == "call_tool" and e["status"] != "running"]
    assert calls[0]["status"] == "failed" and "outside allowed directories" in calls[0]["message"]
    assert calls[1]["status"] == "done" and calls[1]["data"]["round"] == 2
    assert "suppliers.md" in calls[1]["data"]["output"]
    assert events[-1]["data"]["answer"] == "The folder holds returns.md and suppliers.md."


async def test_a_plan_naming_a_tool_we_do_not_have_falls_back_to_a_fixed_workflow(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("tools", ("files.write_file", {"path": "/tmp/x", "content": "pwned"})))
    tasks.brain.say("sql", "SELECT count(*) AS customers FROM customers")
    tasks.brain.say("summary", "There are 200 customers.")
    task_id = await tasks.submit("How many customers do we have?")
    events = await tasks.events(task_id)
    planned = next(e for e in events if e["step"] == "classify_intent" and e["status"] == "done")
    assert planned["data"]["workflow"] == "analytics"
    assert "fixed analytics workflow" in planned["data"]["reason"] and "files.write_file" in planned["data"]["reason"]
    assert events[-1]["data"]["answer"] == "There are 200 customers."
