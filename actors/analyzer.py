"""Analyzer: judges what the executor found, answers, and charts tables worth plotting.

For tool results it may decide that more tool calls are needed (the model asks for them by
function calling); the task manager runs another executor round, up to the depth limit
(seeds/002 ``MAX_TOOL_EXECUTION_DEPTH``), after which the answer uses what there is.
"""

from __future__ import annotations

import json
from typing import Any

from actors.llm import LLMError, complete
from actors.taskwork import TaskWorker, tool_names
from brain.tasks import PlanError, chart_for, check_tool_step, describe_table
from bus import Envelope
from bus.tasks import ANALYZER, Analyzed, AnalyzeTask

TABLE_ROWS_SHOWN = 40


def _table_text(table: dict[str, Any]) -> str:
    lines = [" | ".join(table["columns"])]
    lines += [" | ".join(str(v) for v in row) for row in table["rows"][:TABLE_ROWS_SHOWN]]
    if table["row_count"] > TABLE_ROWS_SHOWN:
        lines.append(f"… {table['row_count'] - TABLE_ROWS_SHOWN} more rows")
    return "\n".join(lines)


class Analyzer(TaskWorker):
    name = "analyzer"
    stage = ANALYZER
    queues = (ANALYZER,)
    max_inflight = 16

    async def on_message(self, env: Envelope[Any]) -> None:
        body = env.body
        if not isinstance(body, AnalyzeTask):
            return
        await self.claim(env)
        if body.workflow == "analytics" and body.table is not None:
            await self._table(env, body, body.table)
        elif body.workflow == "tools":
            await self._tool_results(env, body)
        else:
            await self.step(env, "analyze_results", "running", "Thinking about your question...")
            answer = await self._ask(
                [{"role": "system", "content": "Answer the user's question briefly and plainly."},
                 {"role": "user", "content": body.query}],
                fallback="I could not find a way to answer that with the data and tools I have.",
            )  # fmt: skip
            await self.step(env, "analyze_results", "done", "Answer ready.")
            await self.bus.publish(Analyzed(answer), cause=env)

    async def _table(self, env: Envelope[Any], body: AnalyzeTask, table: dict[str, Any]) -> None:
        await self.step(env, "analyze_results", "running")
        columns, rows = table["columns"], table["rows"]
        plain = describe_table(columns, rows, table.get("truncated", False))
        if rows:
            answer = await self._ask(
                [{"role": "system", "content": "Answer the question from the query result in one to three "
                  "sentences. Quote the numbers exactly; do not invent any."},
                 {"role": "user", "content": f"Question: {body.query}\nSQL: {table['sql']}\nResult:\n"
                  f"{_table_text(table)}"}],
                fallback=plain,
            )  # fmt: skip
        else:
            answer = plain
        await self.step(env, "analyze_results", "done", "Found what the data says.", {"summary": plain})
        await self.step(env, "generate_viz", "running")
        chart = chart_for(columns, rows)
        if chart is None:
            await self.step(env, "generate_viz", "skipped", "Nothing worth plotting in this result.")
        else:
            await self.step(env, "generate_viz", "done", f"A {chart['type']} chart of {len(rows)} points.")
        await self.bus.publish(Analyzed(answer, chart), cause=env)

    async def _tool_results(self, env: Envelope[Any], body: AnalyzeTask) -> None:
        await self.step(env, "analyze_results", "running", "Reading what the tools found...")
        tools = tool_names(await self.tools())
        found = "\n\n".join(
            f"{r['tool']}({json.dumps(r.get('arguments', {}))}) -> {'ok' if r.get('ok') else 'ERROR'}:\n"
            f"{str(r.get('output', ''))[:3000]}"
            for r in body.results
        )
        messages = [
            {"role": "system", "content": "You answer the user's request from the tool results below. If they are "
             "not enough, call a tool to get what is missing; otherwise answer in a few sentences.\n\n"
             f"Tool results:\n{found or '(none)'}"},
            {"role": "user", "content": body.query},
        ]  # fmt: skip
        can_go_deeper = body.depth < self.cfg.max_tool_depth
        plain = _plain_tool_answer(body.results)
        try:
            text, result = await complete(
                self.model, messages, tools=list(tools.values()) if can_go_deeper and tools else None, max_tokens=400
            )
        except LLMError as exc:
            self.log.info("model unavailable for the analysis", error=exc.message)
            text, result = plain, None
        if result is not None and result.tool_calls and can_go_deeper:
            try:
                steps = tuple(check_tool_step({"tool": c.name, "arguments": c.arguments}, tools)
                              for c in result.tool_calls)  # fmt: skip
            except PlanError as exc:
                steps = ()
                self.log.info("unusable tool call from the model", error=str(exc))
            if steps:
                names = ", ".join(s["tool"] for s in steps)
                await self.step(env, "analyze_results", "done", f"Not enough yet: also using {names}.",
                                {"more_steps": list(steps)})  # fmt: skip
                await self.bus.publish(Analyzed(more_steps=steps), cause=env)
                return
        data = {"depth_limit": True} if not can_go_deeper else None
        await self.step(env, "analyze_results", "done", "Answer ready.", data)
        await self.bus.publish(Analyzed(text.strip() or plain), cause=env)

    async def _ask(self, messages: list[dict[str, str]], fallback: str) -> str:
        try:
            text, _ = await complete(self.model, messages, max_tokens=300)
        except LLMError as exc:
            self.log.info("model unavailable for the analysis", error=exc.message)
            return fallback
        return text.strip() or fallback


def _plain_tool_answer(results: tuple[dict[str, Any], ...]) -> str:
    if not results:
        return "No tool could be used for this request."
    parts = []
    for r in results:
        head = f"{r['tool']}: " if r.get("ok") else f"{r['tool']} failed: "
        parts.append(head + str(r.get("output", "")).strip()[:1500])
    return "\n\n".join(parts)
