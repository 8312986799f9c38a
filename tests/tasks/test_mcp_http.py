"""MCP tools over Streamable HTTP: a server built on the official SDK, in its own process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from bench.common import free_port
from config.settings import ROOT
from tests.helpers import read_until
from tests.tasks.conftest import TaskSystem, plan


@pytest.fixture
async def calc_url() -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.mcp_calc_server", str(port), cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await read_until(proc.stderr, "Uvicorn running", timeout=20)  # it listens
    drain = asyncio.create_task(_drain(proc.stderr))  # its access log must not fill the pipe
    yield f"http://127.0.0.1:{port}/mcp"
    drain.cancel()
    proc.terminate()
    await proc.wait()


async def _drain(stream: asyncio.StreamReader | None) -> None:
    assert stream is not None
    while await stream.readline():
        pass


@pytest.fixture
def mcp_config_extra(calc_url: str) -> str:
    return f'\n[[mcp_servers]]\nname = "calc"\nurl = "{calc_url}"\ntools = ["add"]\n'


async def test_tools_over_streamable_http_are_offered_and_called(tasks: TaskSystem) -> None:
    tasks.brain.say("planner", plan("tools", ("calc.add", {"a": 2, "b": 40})))
    tasks.brain.say("tools", "2 + 40 = 42.")
    task_id = await tasks.submit("What is 2 + 40? Use the calculator.")
    events = await tasks.events(task_id)
    done = next(e for e in events if e["step"] == "call_tool" and e["status"] == "done")
    assert done["data"]["tool"] == "calc.add" and done["data"]["output"] == "42"
    assert events[-1]["data"]["answer"] == "2 + 40 = 42."
    offered = {t["function"]["name"] for t in tasks.brain.asked["tools"][0].get("tools", [])}
    assert {"calc__add", "files__read_text_file"} <= offered  # both servers' tools, HTTP and stdio
