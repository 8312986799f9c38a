"""The chat stack plus the telemetry sink, all real (broker, embedded PostgreSQL, edge); and the
sink alone on a PostgreSQL of the test's own (to stop and start)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import Actor, Host
from actors.db.pg import start_embedded
from actors.telemetry import TelemetrySink
from bus import Broker, Endpoints
from config.settings import settings
from tests.chat.conftest import chat, database_url, fake_llm, llm_base_url, pg_url  # noqa: F401


@pytest.fixture
def more_actors() -> list[type[Actor]]:
    return [TelemetrySink]


@pytest.fixture
def own_pg() -> Iterator[tuple[Any, str]]:
    """A PostgreSQL of this test's own, to stop and start."""
    root = Path(tempfile.mkdtemp(prefix="grpo-", dir="/tmp"))
    server, url = start_embedded(root)
    yield server, url
    server.cleanup()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def hosted(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, short_tmp: Path, own_pg: tuple[Any, str]
) -> AsyncIterator[tuple[Endpoints, Any, str, Host]]:
    """A broker and the sink on this test's own PostgreSQL; ``param``: more settings (env)."""
    endpoints = Endpoints(f"ipc://{short_tmp}/bus")
    monkeypatch.setenv("GREENROOM_BUS", endpoints.events_out)
    monkeypatch.setenv("DATABASE_URL", own_pg[1])
    monkeypatch.setenv("GREENROOM_HEARTBEAT", "0.2")
    monkeypatch.setenv("GREENROOM_TELEMETRY_BUFFER", "100000")
    for name, value in getattr(request, "param", {}).items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    with Broker(endpoints):
        host = Host(endpoints, [TelemetrySink])
        await host.start()
        yield endpoints, own_pg[0], own_pg[1], host
        await host.stop()  # once: a test may have stopped it already
    settings.cache_clear()


@pytest.fixture
def sink(hosted: tuple[Endpoints, Any, str, Host]) -> tuple[Endpoints, Any, str]:
    return hosted[:3]
