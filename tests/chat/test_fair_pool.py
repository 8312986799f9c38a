"""actors.db.pg.FairPool: connections go to callers in the order they asked (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools

from actors.db.pg import connect


async def test_under_load_nobody_is_overtaken_by_many_who_asked_later(database_url: str) -> None:
    """New callers keep arriving (as lanes wake for incoming messages) while 2 connections
    serve them. In line, nobody is passed by more than a few who asked later. asyncpg's own
    pool hands a freed connection to whoever asks before the woken waiter runs, and that
    waiter goes to the back: the 6-10 s waits of bench/chat.py's 1000 sessions."""
    pool = await connect(database_url, max_size=2)
    asked, got = itertools.count(), itertools.count()
    worst = 0
    try:
        async with pool.acquire() as a, pool.acquire() as b:  # both connections open
            assert await a.fetchval("SELECT 1") == await b.fetchval("SELECT 1")

        async def caller() -> None:
            nonlocal worst
            mine = next(asked)
            async with pool.acquire() as conn:
                worst = max(worst, next(got) - mine)
                await conn.fetchval("SELECT 1")

        callers = []
        for _ in range(400):  # a few arrive at every turn of the loop
            callers += [asyncio.create_task(caller()) for _ in range(3)]
            await asyncio.sleep(0)
        await asyncio.gather(*callers)
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
            done, _ = await asyncio.wait(waiting, timeout=0.05)
            assert not done and order == []  # all in line behind the held connection
            assert await conn.fetchval("SELECT 42") == 42
        await asyncio.gather(*waiting, *(ask(i) for i in range(5, 10)))
    finally:
        await pool.close()
    assert order == list(range(10))
