"""Telemetry messages: marks the edge adds to a turn's ledger, the sink's metrics, queries."""

from __future__ import annotations

import dataclasses
from typing import Any

from bus.message import Message, message


@message("telemetry.mark")
class Mark(Message):
    """A moment of a turn only the edge sees (the header's session and turn say which)."""

    name: str
    """``first_frame_sent`` or ``playback_started`` (reported by the browser)."""
    at: float = 0.0
    """When it happened (unix seconds), if earlier than the message; 0: the header's ``ts``."""


@message("telemetry.metrics", version=2)
class MetricsSnapshot(Message):
    """The sink's counters, published every second for the edge's ``/metrics``."""

    messages: dict[str, int]
    """Messages seen on the bus, per type (cumulative)."""
    processes: dict[str, dict[str, int]]
    """Per process (actor group): its last heartbeat's counters (lane depth, drops…)."""
    restarts: dict[str, int]
    """Restarts per process name, from the supervisor's ``sys.process`` events."""
    sessions_active: int
    """Sessions with traffic in the last five minutes."""
    histograms: dict[str, dict[str, Any]]
    """Turn latencies: ``{name: {"buckets": [le...], "counts": [...], "sum": s, "count": n}}`` (ms)."""
    sink: dict[str, int]
    """The sink itself: ``buffered``, ``written``, ``overflow``, ``missed``, ``db_up``, ``flush_failures``."""
    missed: dict[str, int] = dataclasses.field(default_factory=dict)
    """Messages the bus dropped on their way to the sink, per type (gaps in senders' ``seq``; v2)."""


@message("telemetry.sessions_request")
class SessionsRequest(Message):
    """Ask the sink for recent telemetry sessions. Answered by ``telemetry.sessions``."""

    limit: int = 100
    """Most recent sessions."""


@message("telemetry.sessions")
class Sessions(Message):
    """Recent telemetry sessions, newest first."""

    sessions: tuple[dict[str, Any], ...] = ()
    """``{session_id, kind, character, first_seen, last_seen, events, turns}``."""
    latency: dict[str, Any] | None = None
    """Percentiles over recent turns: ``{ttft_ms: {p50, p90, p99, n}, ttfa_ms: …, total_ms: …}``."""


@message("telemetry.session_request")
class SessionRequest(Message):
    """Ask the sink for one session's events and turn ledgers. Answered by ``telemetry.session``."""

    limit: int = 500
    """Most recent events."""


@message("telemetry.session")
class SessionDetail(Message):
    """One session: its summary, events (oldest first) and turn ledgers."""

    found: bool
    """False: the sink has nothing for this session."""
    session: dict[str, Any] | None = None
    """The summary row."""
    events: tuple[dict[str, Any], ...] = ()
    """``{id, ts, turn, type, src, parent, body, extra_bytes}``."""
    turns: tuple[dict[str, Any], ...] = ()
    """``{turn, character, provider, source, started_at, hops: {name: ms}, ttft_ms, ttfa_ms, total_ms}``."""
