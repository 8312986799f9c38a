"""Versioned migrations: applied once, in order, recorded."""

from __future__ import annotations

from actors.db.pg import connect, migrate


async def test_migrations_apply_once(database_url: str) -> None:
    pool = await connect(database_url)
    assert await migrate(pool) == [1, 2, 3]
    assert await migrate(pool) == []
    rows = await pool.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == [(1, "0001_chat"), (2, "0002_tasks"), (3, "0003_telemetry")]
    cols = {r["column_name"] for r in await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'messages'")}  # fmt: skip
    assert {"id", "session_id", "speaker", "content", "timestamp", "metadata"} <= cols
    await pool.close()


async def test_commit_durability_follows_the_setting(database_url: str) -> None:
    for sync, expected in ((False, "off"), (True, "on")):
        pool = await connect(database_url, sync_commit=sync)
        assert await pool.fetchval("SHOW synchronous_commit") == expected
        await pool.close()
