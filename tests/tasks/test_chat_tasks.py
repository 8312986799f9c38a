"""From chat: the orchestrator hands a data question to the task agents; the browser sees their
progress as agent_notification frames; the result is injected into the character's next turn."""

from __future__ import annotations

from tests.tasks.conftest import TaskSystem, plan
from tests.tasks.test_flow import REVENUE_SQL


async def test_a_data_question_in_chat_becomes_a_task_whose_result_the_character_can_talk_about(
    tasks: TaskSystem,
) -> None:
    tasks.brain.say("planner", plan("analytics"))
    tasks.brain.say("sql", REVENUE_SQL)
    tasks.brain.say("summary", "Revenue rose every month; last month was the best yet.")
    ws = await tasks.chat.ws("ada")
    started = await ws.start()
    await ws.say("What was our revenue by month?")
    first_reply = await ws.reply()
    assert first_reply["text"]  # the character answers at once…
    await ws.expect(lambda f: f.get("type") == "agent_notification" and f["status"] == "result", timeout=20)
    notes = [f for f in ws.frames if f.get("type") == "agent_notification"]  # …while the analysts work
    steps = [n["step"] for n in notes if n.get("step")]
    assert steps[:3] == ["classify_intent", "classify_intent", "fetch_context"] and "execute_sql" in steps
    assert {n["source"] for n in notes} >= {"planner", "executor", "analyzer"}
    assert notes[-1]["text"] == "Revenue rose every month; last month was the best yet."
    assert len({n["task_id"] for n in notes}) == 1
    character_calls = [r["body"] for r in tasks.chat.llm.requests if "Ada" in r["body"]["messages"][0]["content"]]
    assert "looking into it" in character_calls[0]["messages"][0]["content"]

    await ws.say("So how did we do?")
    await ws.reply()
    system = [r["body"] for r in tasks.chat.llm.requests if "Ada" in r["body"]["messages"][0]["content"]][-1]
    assert "last month was the best yet" in system["messages"][0]["content"]
    async with tasks.http.get(f"{tasks.url}/api/v1/sessions/{started['session_id']}/messages") as resp:
        messages = (await resp.json())["messages"]
    recorded = [m for m in messages if m["speaker"] == "system"]
    assert len(recorded) == 1 and "best yet" in recorded[0]["content"]
    assert recorded[0]["metadata"]["state"] == "done"
    await ws.close()
