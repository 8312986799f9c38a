"""What the system benchmarks share: ports, percentiles, waiting for a deployed system."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp


def python_loop_ms() -> float:
    """A fixed Python loop (5M additions), in ms: this VM's speed drifts by up to ~3x over
    hours, and this puts a run's figures in context (131 in a fast phase, 200-330 in a slow one)."""
    t = time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    return (time.perf_counter() - t) * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else float("nan")


async def wait_healthy(url: str, timeout: float = 180) -> None:
    """Until ``/healthz`` says every actor is up (models load for a while)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("system did not become healthy")
