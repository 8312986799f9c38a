"""The chat stack plus the telemetry sink, all real (broker, embedded PostgreSQL, edge)."""

from __future__ import annotations

import pytest

from actors import Actor
from actors.telemetry import TelemetrySink
from tests.chat.conftest import chat, database_url, fake_llm, llm_base_url, pg_url  # noqa: F401


@pytest.fixture
def more_actors() -> list[type[Actor]]:
    return [TelemetrySink]
