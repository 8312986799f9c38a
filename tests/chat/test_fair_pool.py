"""actors.db.pg.FairPool: connections go to callers in the order they asked (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools

from actors.db.pg import connect


async def test_under_load_nobody_is_overtaken_by_many_who_asked_later(database_url: str) -> None:
    """100 callers (a lane each) share 2 connections. In line, a caller is passed by at most a
    few who asked after it; asyncpg's own pool let ~200 pass (a woken waiter finds the freed
    connection taken by a newcomer and goes to the back), the 10 s timeouts of bench/chat.py."""
    pool = await connect(database_url, max_size=2)
    asked, got = itertools.count(), itertools.count()
    worst = 0
    try:

        async def caller() -> None:
            nonlocal worst
            for _ in range(20):
                mine = next(asked)
                async with pool.acquire() as conn:
                    worst = max(worst, next(got) - mine)
                    await conn.fetchval("SELECT 1")

        await asyncio.gather(*(caller() for _ in range(100)))
    finally:
        await pool.close()
    assert worst < 20


async def test_a_connection_held_by_acquire_counts_in_the_line(database_url: str) -> None:
    pool = await connect(database_url, max_size=1)
    order: list[int] = []
    try:

        async def ask(i: int) -> None:
            order.append(await pool.fetchval("SELECT $1::int", i))

        async with pool.acquire() as conn:
            waiting = [asyncio.create_task(ask(i)) for i in range(5)]
            await asyncio.sleep(0.05)
            assert order == []  # all in line behind the held connection
            assert await conn.fetchval("SELECT 42") == 42
        await asyncio.gather(*waiting, *(ask(i) for i in range(5, 10)))
    finally:
        await pool.close()
    assert order == list(range(10))
