"""Shared fixtures: a real broker on a fresh ipc path, free TCP ports, collectors."""

from __future__ import annotations

import random
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bus import QUEUES, Broker, Endpoints
from tests.helpers import Collector


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: ipc socket paths must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="gr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ipc_endpoints(short_tmp: Path) -> Endpoints:
    return Endpoints(f"ipc://{short_tmp}/bus")


def free_tcp_base(span: int = 2 + 2 * len(QUEUES)) -> int:
    """A port P with P..P+span-1 all free on loopback, below the kernel's ephemeral range:
    a port from that range, free when checked, could become any outgoing connection's own
    port before the broker binds it (a CI run failed so, 2026-11-24)."""
    low, _ = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    low = low if low - span > 10_000 else 32_768
    for _ in range(200):
        base = random.randrange(10_000, low - span)
        socks = []
        try:
            for port in range(base, base + span):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range")


@pytest.fixture
def tcp_endpoints() -> Endpoints:
    return Endpoints(f"tcp://127.0.0.1:{free_tcp_base()}")


@pytest.fixture
def broker(ipc_endpoints: Endpoints) -> Iterator[Endpoints]:
    with Broker(ipc_endpoints):
        yield ipc_endpoints


@pytest.fixture
async def watcher(broker: Endpoints) -> AsyncIterator[Collector]:
    """Sees every event on the bus."""
    collector = Collector(broker)
    await collector.start()
    yield collector
    await collector.close()
