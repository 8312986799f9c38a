"""The task API's answers to bad input, and its access control once tokens are on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tasks.conftest import TaskSystem, plan


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("not json", 400, "bad_json"),
        ([1, 2], 400, "bad_request"),
        ({}, 400, "bad_query"),
        ({"query": "   "}, 400, "bad_query"),
        ({"query": 42}, 400, "bad_query"),
        ({"query": "x" * 4001}, 413, "too_large"),
        ({"query": "revenue?", "user_id": ["me"]}, 400, "bad_user"),
    ],
)
async def test_bad_submissions_get_a_clear_error(tasks: TaskSystem, body: Any, status: int, code: str) -> None:
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    async with tasks.http.post(f"{tasks.url}/api/query", **kwargs) as resp:
        assert resp.status == status
        assert (await resp.json())["error"]["code"] == code


async def test_unknown_tasks_and_bad_ids_are_told_apart(tasks: TaskSystem) -> None:
    for method, path in [("GET", "/api/stream/wf-nope"), ("GET", "/api/v1/tasks/wf-nope"),
                         ("POST", "/api/v1/tasks/wf-nope/cancel")]:  # fmt: skip
        async with tasks.http.request(method, tasks.url + path) as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "no_task"
    async with tasks.http.get(f"{tasks.url}/api/v1/tasks/a%20b") as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_task_id"
    tasks.brain.say("planner", plan("answer"))
    tasks.brain.say("answer", "Hello.")
    task_id = await tasks.submit("Say hello")
    async with tasks.http.get(f"{tasks.url}/api/stream/{task_id}", headers={"Last-Event-ID": "abc"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_last_event_id"
    events = await tasks.events(task_id)  # the bad request lost nothing
    assert events[-1]["data"]["answer"] == "Hello."


@pytest.mark.parametrize("task_settings", [{"GREENROOM_API_TOKENS": "tok-a:alice,tok-b:bob"}])
async def test_with_tokens_on_a_stream_is_only_for_its_owner(tasks: TaskSystem) -> None:
    alice, bob = {"Authorization": "Bearer tok-a"}, {"Authorization": "Bearer tok-b"}
    tasks.brain.say("planner", plan("answer"))
    tasks.brain.say("answer", "Hello, Alice.")
    async with tasks.http.post(f"{tasks.url}/api/query", json={"query": "Say hello"}) as resp:
        assert resp.status == 401
    async with tasks.http.post(f"{tasks.url}/api/query", json={"query": "hi", "user_id": "bob"}, headers=alice) as resp:
        assert resp.status == 403
    async with tasks.http.post(f"{tasks.url}/api/query", json={"query": "Say hello"}, headers=alice) as resp:
        assert resp.status == 202
        task_id = (await resp.json())["workflow_id"]
    for path in [f"/api/stream/{task_id}", f"/api/v1/tasks/{task_id}"]:
        async with tasks.http.get(tasks.url + path, headers=bob) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
        async with tasks.http.get(tasks.url + path) as resp:
            assert resp.status == 401
    async with tasks.http.post(f"{tasks.url}/api/v1/tasks/{task_id}/cancel", headers=bob) as resp:
        assert resp.status == 403
    events = await tasks.events(task_id, headers=alice)
    assert events[-1]["data"]["answer"] == "Hello, Alice."
    # EventSource cannot set headers: ?token= does the same
    async with tasks.http.get(f"{tasks.url}/api/stream/{task_id}?token=tok-a&last_event_id=1") as resp:
        assert resp.status == 200 and "event: end" in await resp.text()
    async with tasks.http.get(f"{tasks.url}/api/v1/tasks/{task_id}", headers=alice) as resp:
        assert (await resp.json())["user_id"] == "alice"
