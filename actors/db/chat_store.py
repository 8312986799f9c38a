"""Sessions and messages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from actors.db.pg import FairPool


class Unstorable(ValueError):
    """PostgreSQL refused the content as given (a NUL character, say): storing it again fails again."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    speaker: str
    content: str
    timestamp: datetime
    turn: int
    metadata: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "speaker": self.speaker,
            "content": self.content,
            "timestamp": self.timestamp.isoformat(),
            "turn": self.turn,
            "metadata": self.metadata,
        }


class ChatStore:
    def __init__(self, pool: FairPool) -> None:
        self._pool = pool

    async def create_session(self, character: str) -> str:
        session = "s-" + uuid.uuid4().hex[:16]
        await self._pool.execute("INSERT INTO sessions (id, character) VALUES ($1, $2)", session, character)
        return session

    async def session_character(self, session: str) -> str | None:
        value = await self._pool.fetchval("SELECT character FROM sessions WHERE id = $1", session)
        return str(value) if value is not None else None

    async def latest_turn(self, session: str) -> int:
        value = await self._pool.fetchval("SELECT coalesce(max(turn), 0) FROM messages WHERE session_id = $1", session)
        return int(value or 0)

    async def end_session(self, session: str) -> None:
        await self._pool.execute("UPDATE sessions SET ended_at = now() WHERE id = $1", session)

    async def add_message(
        self, session: str, speaker: str, content: str, turn: int, metadata: dict[str, Any] | None = None
    ) -> str:
        message_id = uuid.uuid4()
        try:
            await self._pool.execute(
                "INSERT INTO messages (id, session_id, speaker, content, turn, metadata)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                message_id, session, speaker, content, turn, metadata or {},
            )  # fmt: skip
        except asyncpg.DataError as exc:
            raise Unstorable(str(exc)) from exc
        return str(message_id)

    async def record_heard(self, message_id: str, heard: str) -> None:
        """An interrupted spoken reply: keep what the user heard, and what was generated."""
        await self._pool.execute(
            "UPDATE messages SET metadata = metadata || jsonb_build_object('generated', content, 'heard', true,"
            " 'interrupted', true), content = $2 WHERE id = $1",
            uuid.UUID(message_id), heard,
        )  # fmt: skip

    async def messages(self, session: str, limit: int = 200) -> list[StoredMessage]:
        rows = await self._pool.fetch(
            "SELECT * FROM (SELECT id, speaker, content, timestamp, turn, metadata FROM messages"
            " WHERE session_id = $1 ORDER BY timestamp DESC LIMIT $2) recent ORDER BY timestamp",
            session, limit,
        )  # fmt: skip
        return [
            StoredMessage(str(r["id"]), r["speaker"], r["content"], r["timestamp"], r["turn"], r["metadata"])
            for r in rows
        ]
