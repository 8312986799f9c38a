"""Tasks and their event logs; the read-only analytics connection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from actors.db.pg import FairPool

READER_ROLE = "greenroom_reader"
DEMO_TABLES = ("customers", "products", "orders")


@dataclass(slots=True)
class TaskRow:
    id: str
    user_id: str
    query: str
    chat_session: str
    state: str
    stage: str
    attempt: int
    work: dict[str, Any] | None
    progress: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "query": self.query, "user_id": self.user_id, "state": self.state,
            "progress": self.progress, "attempt": self.attempt, "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(), "result": self.result, "error": self.error,
        }  # fmt: skip


_COLUMNS = (
    "id, user_id, query, chat_session, state, stage, attempt, work, progress, result, error, created_at, updated_at"
)


def _row(r: asyncpg.Record) -> TaskRow:
    return TaskRow(
        r["id"], r["user_id"], r["query"], r["chat_session"] or "", r["state"], r["stage"], r["attempt"], r["work"],
        r["progress"], r["result"], r["error"], r["created_at"], r["updated_at"],
    )  # fmt: skip


class TaskStore:
    def __init__(self, pool: FairPool) -> None:
        self._pool = pool

    async def create(self, task_id: str, query: str, user_id: str, chat_session: str, work: dict[str, Any]) -> TaskRow:
        r = await self._pool.fetchrow(
            f"INSERT INTO tasks (id, user_id, query, chat_session, state, stage, work) VALUES"
            f" ($1, $2, $3, nullif($4, ''), 'queued', 'planner', $5) RETURNING {_COLUMNS}",
            task_id, user_id, query, chat_session, work,
        )  # fmt: skip
        return _row(r)

    async def get(self, task_id: str) -> TaskRow | None:
        r = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM tasks WHERE id = $1", task_id)
        return _row(r) if r is not None else None

    async def open_tasks(self) -> list[TaskRow]:
        rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM tasks WHERE state IN ('queued', 'running')")
        return [_row(r) for r in rows]

    async def save(self, task: TaskRow) -> None:
        """Persist the task's state, stage, work item, progress, result and error."""
        await self._pool.execute(
            "UPDATE tasks SET state = $2, stage = $3, attempt = $4, work = $5, progress = $6, result = $7,"
            " error = $8, updated_at = now() WHERE id = $1",
            task.id, task.state, task.stage, task.attempt, task.work, task.progress, task.result, task.error,
        )  # fmt: skip

    async def add_event(self, task_id: str, event_id: int, event: dict[str, Any]) -> None:
        await self._pool.execute(
            "INSERT INTO task_events (task_id, id, event) VALUES ($1, $2, $3)", task_id, event_id, event
        )

    async def events(self, task_id: str, after: int = 0) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT event FROM task_events WHERE task_id = $1 AND id > $2 ORDER BY id", task_id, after
        )
        return [r["event"] for r in rows]

    async def last_event_id(self, task_id: str) -> int:
        value = await self._pool.fetchval("SELECT coalesce(max(id), 0) FROM task_events WHERE task_id = $1", task_id)
        return int(value or 0)


def reader_url(url: str) -> str:
    """The same server and database, logged in as the read-only role."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{READER_ROLE}@{host}").geturl()


async def _reader_init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect_reader(url: str, statement_timeout: float) -> asyncpg.Pool:
    """A pool for analytics queries: the read-only role, read-only transactions, a statement timeout."""
    pool = await asyncpg.create_pool(
        url, min_size=1, max_size=4, init=_reader_init,
        server_settings={"statement_timeout": str(int(statement_timeout * 1000)), "search_path": "demo",
                         "default_transaction_read_only": "on"},
    )  # fmt: skip
    assert pool is not None
    who = await pool.fetchval("SELECT current_user")
    if who != READER_ROLE:
        await pool.close()
        raise RuntimeError(f"analytics must run as {READER_ROLE}, but this connection is {who}")
    return pool
