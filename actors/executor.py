"""Executor: runs a plan's steps with tools.

- analytics (seeds/004): look up the schema, have the model write SQL, validate it (one
  read-only SELECT over the demo tables), run it as the read-only role under a statement
  timeout; a refused or failing query goes to ``analyze_error`` and a corrected one is
  asked for, a bounded number of times.
- tools: call each step's MCP tool with a timeout (seeds/002 ``TOOL_EXECUTION_TIMEOUT``);
  a tool's failure is a result the analyzer judges, not a crash.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from actors.db.pg import Database
from actors.db.task_store import DEMO_TABLES, connect_reader, reader_url
from actors.llm import LLMError, complete
from actors.mcp_tools import Toolbox, ToolError
from actors.taskwork import TaskWorker
from brain.tasks import UnsafeSQL, extract_sql, jsonable, tool_progress, validate_sql
from bus import Envelope
from bus.tasks import EXECUTOR, Executed, ExecuteTask, ToolCatalog, ToolsRequest

SQL_ATTEMPTS = 3  # model-written queries per task (the first and two corrections)
MAX_ROWS = 500


EXAMPLE_SQL = (
    "SELECT to_char(date_trunc('month', ordered_at), 'YYYY-MM') AS month, sum(revenue) AS revenue\n"
    "FROM orders GROUP BY 1 ORDER BY 1"
)


def sql_messages(query: str, schema: str, problem: str = "", previous: str = "") -> list[dict[str, str]]:
    system = (
        "You write one PostgreSQL SELECT query that answers the user's question. Only these tables exist "
        f"(schema demo):\n{schema}\nAnswer with the SQL only, in a ```sql block. Read only: no changes. "
        "Use PostgreSQL date functions (date_trunc, to_char, extract, now(), interval), not MySQL ones.\n"
        f"Example, revenue by month:\n```sql\n{EXAMPLE_SQL}\n```"
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": query}]
    if problem:
        messages += [
            {"role": "assistant", "content": f"```sql\n{previous}\n```"},
            {"role": "user", "content": f"That query failed: {problem}\nWrite a corrected query."},
        ]
    return messages


class Executor(TaskWorker):
    name = "executor"
    stage = EXECUTOR
    queues = (EXECUTOR,)
    handles = (ToolsRequest,)
    max_inflight = 8

    async def on_start(self) -> None:
        await super().on_start()
        self._db = Database()
        url = self.cfg.analytics_url or reader_url(await self._db.locate(self.cfg.database_url, self.cfg.data_dir))
        self._reader = await connect_reader(url, self.cfg.tool_timeout)
        self._schema = ""
        self.toolbox = Toolbox(self.cfg.mcp_servers)  # its servers start when a task first asks for tools

    async def on_stop(self) -> None:
        await self.toolbox.close()
        await self._reader.close()
        await super().on_stop()

    async def on_message(self, env: Envelope[Any]) -> None:
        body = env.body
        if isinstance(body, ToolsRequest):
            await self.toolbox.ensure()
            tools = tuple(t.openai() for t in self.toolbox.tools.values())
            await self.bus.publish(ToolCatalog(tools, dict(self.toolbox.unavailable) or None), cause=env)
            return
        if not isinstance(body, ExecuteTask):
            return
        await self.claim(env)
        if body.depth > self.cfg.max_tool_depth:
            limit = self.cfg.max_tool_depth
            await self.fail(env, "tool_depth", f"The task needed more than {limit} rounds of tools (the limit).")
        elif body.workflow == "analytics":
            await self._analytics(env, body)
        else:
            await self._tools(env, body)

    # -- analytics --------------------------------------------------------------------------

    async def _analytics(self, env: Envelope[Any], body: ExecuteTask) -> None:
        await self.step(env, "fetch_context", "running")
        schema = await self._describe()
        await self.step(env, "fetch_context", "done", data={"tables": list(DEMO_TABLES)})
        problem = sql = ""
        code = "sql_failed"
        for attempt in range(1, SQL_ATTEMPTS + 1):
            await self.step(env, "generate_sql", "running")
            try:
                text, _ = await complete(self.model, sql_messages(body.query, schema, problem, sql), max_tokens=300)
            except LLMError as exc:
                await self.fail(env, exc.code, exc.message)
                return
            sql = extract_sql(text)
            await self.step(env, "generate_sql", "done", data={"sql": sql})
            await self.step(env, "validate_sql", "running")
            try:
                sql = validate_sql(sql, DEMO_TABLES)
            except UnsafeSQL as exc:
                code, problem = "unsafe_sql", f"refused: {exc}"
                await self.step(env, "validate_sql", "failed", f"The query was refused: {exc}.", {"sql": sql})
            else:
                await self.step(env, "validate_sql", "done", "The query only reads: safe to run.")
                await self.step(env, "execute_sql", "running")
                try:
                    table = await self._run(sql)
                except (asyncpg.PostgresError, TimeoutError) as exc:
                    code, problem = "sql_failed", _db_error(exc, self.cfg.tool_timeout)
                    await self.step(env, "execute_sql", "failed", f"The database said: {problem}", {"sql": sql})
                else:
                    n = table["row_count"]
                    more = "+" if table["truncated"] else ""
                    await self.step(env, "execute_sql", "done", f"Fetched {n}{more} row{'s' * (n != 1)}.",
                                    {"rows": n, "columns": table["columns"]})  # fmt: skip
                    await self.bus.publish(Executed(table=table), cause=env)
                    return
            if attempt == SQL_ATTEMPTS:
                break
            await self.step(env, "analyze_error", "running", f"Looking into the issue: {problem}")
            await self.step(env, "analyze_error", "done", "Asking for a corrected query.")
        await self.fail(env, code, f"No safe, working query after {SQL_ATTEMPTS} tries; the last one was {problem}.")

    async def _describe(self) -> str:
        if not self._schema:
            rows = await self._reader.fetch(
                "SELECT table_name, string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) cols"
                " FROM information_schema.columns WHERE table_schema = 'demo' GROUP BY table_name ORDER BY 1"
            )
            self._schema = "\n".join(f"demo.{r['table_name']}({r['cols']})" for r in rows)
        return self._schema

    async def _run(self, sql: str) -> dict[str, Any]:
        # The server's statement_timeout (the role's pool setting) stops a slow query; the
        # client-side timeout, a little later, only guards against a server that stops answering.
        wait = self.cfg.tool_timeout + 2.0
        async with self._reader.acquire() as conn, conn.transaction(readonly=True):
            stmt = await conn.prepare(sql, timeout=wait)
            records = await stmt.fetch(timeout=wait)
            columns = [a.name for a in stmt.get_attributes()]
        rows = [[jsonable(v) for v in r.values()] for r in records[: MAX_ROWS + 1]]
        truncated = len(rows) > MAX_ROWS
        rows = rows[:MAX_ROWS]
        return {"sql": sql, "columns": columns, "rows": rows, "row_count": len(rows), "truncated": truncated}

    # -- tools ------------------------------------------------------------------------------

    async def _tools(self, env: Envelope[Any], body: ExecuteTask) -> None:
        results = list(body.results)
        for i, step in enumerate(body.steps):
            tool, args = str(step.get("tool", "")), step.get("arguments") or {}
            data = {"tool": tool, "arguments": args, "round": body.depth}
            progress = {"progress": tool_progress(i, len(body.steps))}
            await self.step(env, "call_tool", "running", f"Using {tool}...", data | progress)
            try:
                ok, output = await self.toolbox.call(tool, args, self.cfg.tool_timeout)
            except ToolError as exc:
                ok, output = False, str(exc)
            summary = f"{tool} answered." if ok else f"{tool} failed: {output[:300]}"
            await self.step(env, "call_tool", "done" if ok else "failed", summary, data | {"output": output[:1000]})
            results.append({"tool": tool, "arguments": args, "ok": ok, "output": output})
        await self.bus.publish(Executed(results=tuple(results)), cause=env)


def _db_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, asyncpg.QueryCanceledError | TimeoutError):
        return f"the query took longer than {timeout:g} s and was stopped"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
