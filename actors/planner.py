"""Planner: turns a request into a plan of typed steps.

The model is asked for a plan in a JSON schema (providers that support structured output
are held to it; a local llama.cpp server enforces it with a grammar). When no usable plan
comes back, a known workflow's fixed step list is used: the analytics workflow of
seeds/004 for questions about the shop's data, the tools the model picks by function
calling for questions about files, a direct answer otherwise.
"""

from __future__ import annotations

import json
from typing import Any

from actors.llm import LLMError, complete
from actors.taskwork import TaskWorker, tool_names
from brain.tasks import PLAN_SCHEMA, PlanError, check_tool_step, classify, parse_plan
from bus import Envelope
from bus.tasks import PLANNER, Planned, PlanTask

_LABELS = {"analytics": "a question about the shop's data", "tools": "a job for tools", "answer": "a question"}


def plan_messages(query: str, tools: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    listing = "\n".join(
        f"- {name}: {t['function'].get('description', '')[:200]}"
        f" arguments: {json.dumps(t['function'].get('parameters', {}))[:400]}"
        for name, t in tools.items()
    )
    return [
        {"role": "system", "content": (
            "You are the planner of a data assistant. Choose a workflow for the user's request and answer with "
            "JSON only: {\"workflow\": \"analytics\" | \"tools\" | \"answer\", \"steps\": [...]}.\n"
            "- analytics: questions about the shop's orders, revenue, products or customers (a SQL database "
            "answers them); steps is [].\n"
            "- tools: requests the tools below can serve; steps is a list of {\"tool\": NAME, \"arguments\": {...}}.\n"
            "- answer: anything else; steps is [].\n"
            f"Tools:\n{listing or '(none)'}"
        )},
        {"role": "user", "content": query},
    ]  # fmt: skip


class Planner(TaskWorker):
    name = "planner"
    stage = PLANNER
    queues = (PLANNER,)
    max_inflight = 16

    async def on_message(self, env: Envelope[Any]) -> None:
        body = env.body
        if not isinstance(body, PlanTask):
            return
        await self.claim(env)
        tools = tool_names(await self.tools())
        workflow, steps, reason = await self._plan(body.query, tools)
        data = {"workflow": workflow, "steps": list(steps), "reason": reason}
        await self.step(env, "classify_intent", "done", f"Understood: {_LABELS[workflow]}.", data)
        await self.bus.publish(Planned(workflow, steps, reason), cause=env)

    async def _plan(self, query: str, tools: dict[str, dict[str, Any]]) -> tuple[str, tuple[dict[str, Any], ...], str]:
        schema = {"type": "json_schema", "json_schema": {"name": "plan", "schema": PLAN_SCHEMA, "strict": False}}
        try:
            text, _ = await complete(self.model, plan_messages(query, tools), response_format=schema, max_tokens=300)
            workflow, steps = parse_plan(text, tools)
            return workflow, steps, "planned by the model"
        except (LLMError, PlanError) as exc:
            why = exc.message if isinstance(exc, LLMError) else str(exc)
        workflow = classify(query, bool(tools))
        if workflow == "tools":
            steps = await self._pick_tools(query, tools)
            if steps:
                return workflow, steps, f"tools picked by function calling (no usable plan: {why})"
            workflow = "answer"
        return workflow, (), f"the fixed {workflow} workflow (no usable plan: {why})"

    async def _pick_tools(self, query: str, tools: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], ...]:
        messages = [{"role": "system", "content": "Call the tools that answer the user's request."},
                    {"role": "user", "content": query}]  # fmt: skip
        try:
            _, result = await complete(self.model, messages, tools=list(tools.values()), max_tokens=200)
            return tuple(check_tool_step({"tool": c.name, "arguments": c.arguments}, tools) for c in result.tool_calls)
        except (LLMError, PlanError) as exc:
            self.log.info("no tools picked", error=str(exc))
            return ()
