"""The task page in headless Chromium: submit, live progress panel, answer, data and chart."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page, expect

from tests.chat.test_browser import page  # noqa: F401
from tests.tasks.conftest import TaskSystem, plan
from tests.tasks.test_flow import REVENUE_SQL


async def test_the_task_page_shows_live_steps_then_the_answer_with_a_chart(tasks: TaskSystem, page: Page) -> None:  # noqa: F811
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say("sql", REVENUE_SQL, delay=0.05)
    tasks.brain.say("summary", "Revenue grew month after month.")
    errors: list[Any] = []
    page.on("pageerror", lambda exc: errors.append(exc))  # noqa: PLW0108
    await page.goto(tasks.url + "/tasks")
    await page.fill("#query", "What was revenue by month?")
    await page.click("#submit")
    # while it runs: the step being written is shown as an action in progress
    await expect(page.locator('#steps li[data-step="generate_sql"].action.running')).to_be_visible()
    await expect(page.locator("#answer")).to_have_text("Revenue grew month after month.", timeout=20_000)
    steps = page.locator("#steps li")
    names = [await s.get_attribute("data-step") for s in await steps.all()]
    assert names == ["classify_intent", "fetch_context", "generate_sql", "validate_sql", "execute_sql",
                     "analyze_results", "generate_viz", "end"]  # fmt: skip
    await expect(page.locator("#percent")).to_have_text("100%")
    await expect(page.locator('#steps li[data-step="validate_sql"]')).to_have_class("check done")
    chart = page.locator("#chart svg.chart.line")
    await expect(chart).to_be_visible()
    assert await page.locator("#chart polyline.series").count() == 1
    task = await tasks.task(await page.evaluate("window.greenroomTasks.current"))
    assert await page.locator("#table tr").count() == task["result"]["table"]["row_count"] + 1  # + the header
    assert not errors
