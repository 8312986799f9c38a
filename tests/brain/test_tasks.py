"""Task logic without I/O: SQL safety, plans, steps and progress, charts, summaries."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from brain.tasks import (
    PlanError,
    UnsafeSQL,
    chart_for,
    classify,
    describe_table,
    extract_sql,
    jsonable,
    parse_plan,
    step_event,
    validate_sql,
)  # fmt: skip

TABLES = ("customers", "products", "orders")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT to_char(date_trunc('month', ordered_at), 'YYYY-MM') AS month, sum(revenue) FROM orders GROUP BY 1;",
        "select p.name, sum(o.revenue) r from demo.orders o join demo.products p on p.id = o.product_id group by 1",
        "WITH m AS (SELECT date_trunc('month', ordered_at) d, sum(revenue) r FROM orders GROUP BY 1) SELECT * FROM m",
        "select count(*) from orders, customers c where orders.customer_id = c.id",
        "select sum(revenue) from orders where ordered_at >= date_trunc('month', now()) - interval '1 month'",
        "select * from (select region, count(*) n from customers group by region) x order by n desc",
        "select name from products where name = 'it''s; fine -- really'",
    ],
)
def test_read_only_selects_over_the_demo_tables_pass(sql: str) -> None:
    assert validate_sql(sql, TABLES) == sql.rstrip(";")


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("", "empty"),
        ("DELETE FROM orders", "DELETE is not allowed"),
        ("update orders set revenue = 0", "UPDATE is not allowed"),
        ("SELECT 1; DROP TABLE orders", "only one statement"),
        ("select * from public.sessions", "not public"),
        ("select * from sessions", "table sessions is not one of"),
        ("select * from orders, pg_user", "table pg_user"),
        ("select * from pg_catalog.pg_roles", "not pg_catalog"),
        ("select * from information_schema.tables", "not information_schema"),
        ("select pg_sleep(10)", "function pg_sleep() is not allowed"),
        ("select set_config('role', 'postgres', false)", "set_config"),
        ("select pg_catalog.now()", "schema-qualified functions"),
        ("select * from orders -- why", "comments"),
        ("select /* x */ 1", "comments"),
        ("select * into copy_of_orders from orders", "INTO is not allowed"),
        ("select * from orders for update", "row locks"),
        ("WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x", "DELETE is not allowed"),
        ("select $$text$$", "dollar-quoted"),
        ('select * from "orders"', "quoted identifiers"),
        ("select 'unterminated", "not closed"),
        ("values (1)", "only a SELECT"),
        ("select $1", "parameters"),
    ],
)
def test_anything_else_is_refused_with_a_reason(sql: str, why: str) -> None:
    with pytest.raises(UnsafeSQL, match=why.replace("(", r"\(").replace(")", r"\)")):
        validate_sql(sql, TABLES)


def test_sql_is_taken_from_a_fenced_block_or_from_its_first_select() -> None:
    assert extract_sql("Here:\n```sql\nSELECT 1\n```\nDone.") == "SELECT 1"
    assert extract_sql("Sure! SELECT count(*) FROM orders") == "SELECT count(*) FROM orders"


def test_plans_name_known_workflows_and_tools_only() -> None:
    tools: dict[str, object] = {"files.read_text_file": {}}
    workflow, steps = parse_plan('{"workflow": "tools", "steps": [{"tool": "files__read_text_file", '
                                 '"arguments": "{\\"path\\": \\"a\\"}"}]}', tools)  # fmt: skip
    assert workflow == "tools" and steps == ({"tool": "files.read_text_file", "arguments": {"path": "a"}},)
    assert parse_plan('```json\n{"workflow": "analytics", "steps": []}\n```', tools) == ("analytics", ())
    for bad, why in [("nope", "not JSON"), ('{"workflow": "hack"}', "workflow"),
                     ('{"workflow": "tools", "steps": []}', "at least one"),
                     ('{"workflow": "tools", "steps": [{"tool": "files.write_file", "arguments": {}}]}', "no tool"),
                     ('{"workflow": "tools", "steps": [{"tool": "files.read_text_file", "arguments": [1]}]}',
                      "must be an object")]:  # fmt: skip
        with pytest.raises(PlanError, match=why):
            parse_plan(bad, tools)
    assert classify("What was revenue last month?", tools_available=True) == "analytics"
    assert classify("Read the suppliers file", tools_available=True) == "tools"
    assert classify("Read the suppliers file", tools_available=False) == "answer"


def test_steps_carry_seeds_004_words_and_progress_never_goes_back() -> None:
    e = step_event("generate_sql", "running", progress=15)
    assert e == {"step": "generate_sql", "status": "running", "message": "Writing the database query...",
                 "icon": "⚡", "progress": 30, "category": "action"}  # fmt: skip
    assert step_event("fetch_context", "running", progress=60)["progress"] == 60
    assert step_event("analyze_error", "running", progress=60)["category"] == "error"
    assert step_event("execute_sql", "failed", progress=60)["category"] == "error"
    assert step_event("end", "done", progress=75)["progress"] == 100
    assert step_event("end", "failed", progress=45)["progress"] == 45
    assert step_event("custom_step", "running")["message"] == "Custom step..."


def test_tables_worth_plotting_get_a_chart() -> None:
    monthly = chart_for(["month", "revenue"], [["2026-09", 10], ["2026-10", 12.5]])
    assert monthly == {"type": "line", "x": "month", "labels": ["2026-09", "2026-10"],
                       "series": [{"name": "revenue", "values": [10, 12.5]}]}  # fmt: skip
    by_region = chart_for(["region", "orders", "revenue"], [["north", 3, 9.0], ["south", 4, 8.0]])
    assert by_region is not None and by_region["type"] == "bar" and len(by_region["series"]) == 2
    assert chart_for(["total"], [[5]]) is None  # one number
    assert chart_for(["name", "region"], [["a", "n"], ["b", "s"]]) is None  # nothing numeric
    assert chart_for(["month", "revenue"], [["2026-09", 10]]) is None  # one point


def test_values_from_the_database_become_json_and_tables_plain_words() -> None:
    assert jsonable(decimal.Decimal("12.50")) == 12.5 and jsonable(decimal.Decimal("3")) == 3
    assert jsonable(dt.date(2026, 10, 1)) == "2026-10-01"
    assert describe_table(["total"], [[36257.5]]) == "Result: total = 36,257.50."
    assert describe_table(["m", "r"], []) == "The query ran but found no matching data."
    text = describe_table(["month", "revenue"], [["2026-09", 10], ["2026-10", 30]])
    assert text == "2 rows. revenue: total 40, highest 30 (2026-10)."


def test_failed_and_cancelled_steps_say_so_in_their_icon() -> None:
    assert step_event("validate_sql", "failed", progress=45)["icon"] == "❌"
    assert step_event("end", "failed", progress=45)["icon"] == "❌"
    assert step_event("end", "cancelled", progress=45)["icon"] == "⏹"
    assert step_event("end", "done", progress=90)["icon"] == "✅"
