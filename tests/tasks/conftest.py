"""The task stack, all real: the chat stack plus task manager, planner, analyzer, an executor
host of its own, the read-only analytics role on embedded PostgreSQL, the reference MCP
filesystem server (npm) over stdio, and the official openai SDK against a local
OpenAI-compatible server whose answers are routed by what each request asks."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from actors import Actor, Host
from actors.analyzer import Analyzer
from actors.executor import Executor
from actors.planner import Planner
from actors.tasks import TaskManager
from config.settings import ROOT
from tests.chat.conftest import ChatSystem, chat, database_url, fake_llm, llm_base_url, pg_url  # noqa: F401
from tests.fakes.openai_server import Behaviour, FakeOpenAI

MCP_SERVER = ROOT / ".mcp" / "node_modules" / ".bin" / "mcp-server-filesystem"
ROLES = {
    "planner": "You are the planner",
    "sql": "You write one PostgreSQL SELECT",
    "summary": "Answer the question from the query result",
    "tools": "You answer the user's request from the tool results",
    "answer": "Answer the user's question briefly",
    "pick": "Call the tools that answer",
}


@dataclass
class Brain:
    """What the model answers, per role (the first words of the system prompt), in order."""

    replies: dict[str, deque[Behaviour]] = field(default_factory=lambda: defaultdict(deque))
    asked: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def say(self, role: str, *texts: str, delay: float = 0.0) -> None:
        for text in texts:
            self.replies[role].append(Behaviour(text=text, delay=delay))

    def act(self, role: str, behaviour: Behaviour) -> None:
        self.replies[role].append(behaviour)

    def route(self, payload: dict[str, Any]) -> Behaviour | None:
        system = str(payload["messages"][0]["content"]) if payload.get("messages") else ""
        for role, start in ROLES.items():
            if system.startswith(start):
                self.asked[role].append(payload)
                queue = self.replies[role]
                if queue:
                    return queue.popleft() if len(queue) > 1 else queue[0]  # the last one repeats
                return Behaviour(kind="status", status=500)  # unscripted: the model "fails"
        return None


def plan(workflow: str, *steps: tuple[str, dict[str, Any]]) -> str:
    return json.dumps({"workflow": workflow, "steps": [{"tool": t, "arguments": a} for t, a in steps]})


@dataclass
class TaskSystem:
    chat: ChatSystem
    brain: Brain
    files: Path
    executor: Host | None

    @property
    def url(self) -> str:
        return self.chat.url

    @property
    def http(self) -> aiohttp.ClientSession:
        return self.chat.http

    async def submit(self, query: str, **extra: Any) -> str:
        async with self.http.post(f"{self.url}/api/query", json={"query": query, **extra}) as resp:
            body = await resp.json()
            assert resp.status == 202, body
            return str(body["workflow_id"])

    async def events(
        self, task_id: str, *, last_event_id: int | None = None, stop: Callable[[dict[str, Any]], bool] | None = None,
        headers: dict[str, str] | None = None, timeout: float = 20.0,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Read the SSE stream until it closes (or ``stop`` says so): events with their ``_event`` name."""
        hdrs = dict(headers or {})
        if last_event_id is not None:
            hdrs["Last-Event-ID"] = str(last_event_id)
        out: list[dict[str, Any]] = []
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with self.http.get(f"{self.url}/api/stream/{task_id}", headers=hdrs, timeout=client_timeout) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async for event in sse_events(resp):
                if "comment" not in event:
                    out.append(event)
                    if stop is not None and stop(event):
                        break
        return out

    async def task(self, task_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/api/v1/tasks/{task_id}") as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Parse ``text/event-stream``: each event as ``{"id", "_event", "data"...}``; comments as ``{"comment"}``."""
    fields: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n").rstrip("\r")
        if line == "":
            if "data" in fields:
                event = json.loads(fields["data"])
                event["_event"] = fields.get("event", "message")
                assert int(fields["id"]) == event["id"]
                yield event
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


@pytest.fixture
def files_dir(short_tmp: Path) -> Path:
    files = short_tmp / "files"
    files.mkdir()
    (files / "suppliers.md").write_text("# Suppliers\n\n- Kettles: Brightsteel Ltd. (lead time 5 weeks)\n")
    (files / "returns.md").write_text("Returns are accepted within 30 days.\n")
    return files


@pytest.fixture
def task_settings() -> dict[str, str]:
    """Environment for the task actors; a test module may change it."""
    return {"GREENROOM_SSE_KEEPALIVE": "0.3", "TOOL_EXECUTION_TIMEOUT": "3", "GREENROOM_TASK_TIMEOUT": "30"}


@pytest.fixture
def mcp_config_extra() -> str:
    """More ``[[mcp_servers]]`` for the test's configuration; a test module may add some."""
    return ""


@pytest.fixture
def more_actors(
    monkeypatch: pytest.MonkeyPatch, short_tmp: Path, files_dir: Path, task_settings: dict[str, str],
    mcp_config_extra: str,
) -> list[type[Actor]]:  # fmt: skip
    assert MCP_SERVER.exists(), "the MCP filesystem server is installed by `make test` (npm)"
    config = short_tmp / "greenroom.toml"
    config.write_text(
        "[[mcp_servers]]\n"
        'name = "files"\n'
        f'command = "{MCP_SERVER}"\n'
        f'args = ["{files_dir}"]\n'
        'tools = ["read_text_file", "list_directory"]\n' + mcp_config_extra
    )
    monkeypatch.setenv("GREENROOM_CONFIG", str(config))
    for var, value in task_settings.items():
        monkeypatch.setenv(var, value)
    return [TaskManager, Planner, Analyzer]


@pytest.fixture
def task_stack(chat: ChatSystem, fake_llm: FakeOpenAI, files_dir: Path) -> TaskSystem:  # noqa: F811
    """Everything but an executor (a test starts its own, e.g. as a process it can kill)."""
    brain = Brain()
    fake_llm.router = brain.route
    return TaskSystem(chat, brain, files_dir, None)


@pytest.fixture
async def tasks(task_stack: TaskSystem) -> AsyncIterator[TaskSystem]:
    executor = Host(task_stack.chat.endpoints, [Executor])
    await executor.start()
    task_stack.executor = executor
    yield task_stack
    await executor.stop()
