"""The whole seeds/004 flow over HTTP and SSE, with real PostgreSQL, bus and MCP server."""

from __future__ import annotations

import json

import asyncpg

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
        "SELECT to_char(date_trunc('month', ordered_at), 'YYYY-MM'), sum(revenue) FROM demo.orders GROUP BY 1 ORDER BY 1"
    )
    stored = await conn.fetch("SELECT id, event FROM task_events WHERE task_id = $1 ORDER BY id", task_id)
    await conn.close()
    assert table["rows"] == [[m, float(r) if r != int(r) else int(r)] for m, r in expected]
    assert result["chart"]["type"] == "line" and result["chart"]["labels"] == [r[0] for r in expected]
    assert [json.loads(r["event"])["step"] for r in stored] == [e["step"] for e in events]
    # the model was given the schema, and asked in the model's JSON-schema mode for the plan
    assert "demo.orders(" in tasks.brain.asked["sql"][0]["messages"][0]["content"]
    assert tasks.brain.asked["planner"][0]["response_format"]["type"] == "json_schema"
