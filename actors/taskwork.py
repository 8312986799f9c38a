"""What the planner, executor and analyzer share: a model client, progress steps, claims."""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from actors.actor import Actor
from actors.llm import ChatModel, OpenAIChat
from actors.mcp_tools import START_TIMEOUT
from bus import Envelope
from bus.tasks import Claimed, StageFailed, TaskStep, ToolCatalog, ToolsRequest
from config.settings import settings

TOOLS_TTL = 10.0  # seconds a tool catalog is trusted


class TaskWorker(Actor):
    """A stage of the task pipeline. Each message's session is the task, its turn the attempt."""

    stage: ClassVar[str] = ""
    model: ChatModel

    async def on_start(self) -> None:
        cfg = self.cfg = settings()
        base_url = cfg.llm_base_url or f"http://127.0.0.1:{cfg.llm_port}/v1"
        self.model = OpenAIChat(base_url, cfg.llm_api_key, cfg.llm_model, cfg.llm_timeout)
        self._catalog: tuple[float, tuple[dict[str, Any], ...]] = (0.0, ())

    async def on_stop(self) -> None:
        if isinstance(self.model, OpenAIChat):
            await self.model.close()

    async def claim(self, env: Envelope[Any]) -> None:
        await self.bus.publish(Claimed(self.stage, os.getpid()), cause=env)

    async def step(
        self, env: Envelope[Any], step: str, status: str, message: str = "", data: dict[str, Any] | None = None
    ) -> None:
        await self.bus.publish(TaskStep(step, status, message, data), cause=env)

    async def fail(self, env: Envelope[Any], code: str, message: str) -> None:
        await self.bus.publish(StageFailed(code, message), cause=env)

    async def tools(self) -> tuple[dict[str, Any], ...]:
        """The executors' tools (OpenAI function form), asked over the bus and cached briefly."""
        when, tools = self._catalog
        if time.monotonic() - when < TOOLS_TTL:
            return tools
        try:
            # The executor starts its tool servers when first asked (up to START_TIMEOUT).
            reply = await self.bus.ask(ToolsRequest(), reply=ToolCatalog, timeout=START_TIMEOUT + 2.0)
            tools = reply.body.tools
        except TimeoutError:
            self.log.warning("no executor answered with its tools")
            tools = ()
        self._catalog = (time.monotonic(), tools)
        return tools


def tool_names(tools: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    """Qualified name (``server.tool``) -> its OpenAI function tool."""
    return {t["function"]["name"].replace("__", ".", 1): t for t in tools}
