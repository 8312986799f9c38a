"""Telemetry at the edge: REST over the sink's tables, ``/metrics``, and the web tap.

- ``GET /api/v1/telemetry/sessions`` and ``/api/v1/telemetry/sessions/{id}`` (seeds/000).
- ``GET /metrics``: Prometheus text, from the telemetry sink's latest counters (it sees
  every bus message and heartbeat) and the edge's own gauges.
- ``GET /ws/tap?session=&type=&actor=``: live bus traffic as JSON, one frame per message
  (bodies with bytes shown by size), filtered by session, type prefix and actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from bus import BusError, Endpoints
from bus.system import Error
from bus.tap import Tap, TapFilter, jsonable
from bus.telemetry import SessionDetail, SessionRequest, Sessions, SessionsRequest
from web.keys import CONN, HUB, SETTINGS, SOCKETS
from web.rest import error as _error
from web.rest import query_limit
from web.ws import ASK_TIMEOUT

TAP_QUEUE = 2000
BODY_CHARS = 4000
STALE_METRICS = 10.0


async def _ask(request: web.Request, body: Any, reply: type, session: str = "") -> Any:
    try:
        env = await request.app[CONN].ask(body, reply=(reply, Error), session=session, timeout=ASK_TIMEOUT)
    except (TimeoutError, BusError):
        return None
    return env.body


async def sessions(request: web.Request) -> web.Response:
    limit = query_limit(request, 100)
    if isinstance(limit, web.Response):
        return limit
    body = await _ask(request, SessionsRequest(limit), Sessions)
    if not isinstance(body, Sessions):
        return _error(503, "unavailable", "the telemetry service did not answer")
    return web.json_response({"sessions": list(body.sessions), "latency": body.latency})


async def session(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    limit = query_limit(request, 500)
    if isinstance(limit, web.Response):
        return limit
    body = await _ask(request, SessionRequest(limit), SessionDetail, session=session_id)
    if not isinstance(body, SessionDetail):
        return _error(503, "unavailable", "the telemetry service did not answer")
    if not body.found:
        return _error(404, "no_session", f"no telemetry for session {session_id!r}")
    return web.json_response({"session": body.session, "events": list(body.events), "turns": list(body.turns)})


# -- /metrics -------------------------------------------------------------------------------


class _Greenroom(Collector):
    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[Any]:
        app = self._app
        hub = app[HUB]
        yield GaugeMetricFamily("greenroom_ws_connections", "Open browser WebSockets", len(app[SOCKETS]))
        yield GaugeMetricFamily("greenroom_edge_sessions", "Sessions with a socket on this edge", len(hub.sessions))
        yield GaugeMetricFamily(
            "greenroom_sse_streams", "Open task event streams", sum(len(w) for w in hub.task_watchers.values())
        )
        edge = CounterMetricFamily("greenroom_edge", "Edge counters", labels=["counter"])
        for key, value in {**app[CONN].stats, **hub.stats}.items():
            edge.add_metric([key], value)
        yield edge
        snap = hub.metrics
        up = GaugeMetricFamily("greenroom_telemetry_up", "1 when the telemetry sink reported in the last 10 s")
        fresh = snap is not None and time.monotonic() - hub.metrics_at < STALE_METRICS
        up.add_metric([], 1 if fresh else 0)
        yield up
        if snap is None:
            return
        messages = CounterMetricFamily("greenroom_bus_messages", "Bus messages seen, by type", labels=["type"])
        for kind, n in sorted(snap.messages.items()):
            messages.add_metric([kind], n)
        yield messages
        missed = CounterMetricFamily("greenroom_bus_missed", "Bus messages dropped on their way to the telemetry sink,"
                                     " by type (gaps in their senders' seq)", labels=["type"])  # fmt: skip
        for kind, n in sorted(snap.missed.items()):
            missed.add_metric([kind], n)
        yield missed
        proc = GaugeMetricFamily("greenroom_process_stat", "Each process's heartbeat counters (lane depth, drops…)",
                                 labels=["process", "stat"])  # fmt: skip
        for name, stats in sorted(snap.processes.items()):
            for stat, value in sorted(stats.items()):
                proc.add_metric([name, stat], value)
        yield proc
        restarts = CounterMetricFamily("greenroom_process_restarts", "Restarts by the supervisor", labels=["process"])
        for name, n in sorted(snap.restarts.items()):
            restarts.add_metric([name], n)
        yield restarts
        yield GaugeMetricFamily("greenroom_sessions_active", "Chat sessions active in the last 5 min",
                                snap.sessions_active)  # fmt: skip
        for name, h in sorted(snap.histograms.items()):
            hist = HistogramMetricFamily(f"greenroom_turn_{name}", f"Turn latency {name} (milliseconds)")
            cumulative, buckets = 0, []
            for le, count in zip([*h["buckets"], "+Inf"], h["counts"], strict=True):
                cumulative += count
                buckets.append((str(le), cumulative))
            hist.add_metric([], buckets, h["sum"])
            yield hist
        sink = GaugeMetricFamily("greenroom_telemetry", "Telemetry sink: buffered, written, overflow…",
                                 labels=["stat"])  # fmt: skip
        for stat, value in sorted(snap.sink.items()):
            sink.add_metric([stat], value)
        yield sink


def metrics_registry(app: web.Application) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Greenroom(app))
    return registry


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


METRICS = web.AppKey("metrics", CollectorRegistry)


# -- the web tap ----------------------------------------------------------------------------


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > BODY_CHARS:
        return value[:BODY_CHARS] + f"… ({len(value) - BODY_CHARS} more)"
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v) for v in value[:200]]
    return value


async def tap(request: web.Request) -> web.StreamResponse:
    q = request.query
    session, kind, actor = q.get("session", ""), q.get("type", ""), q.get("actor", "")
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(TAP_QUEUE)
    dropped = 0

    def sink(report: dict[str, Any]) -> None:
        nonlocal dropped
        header = report.get("header") or {}
        if actor and not str(header.get("src", "")).startswith(actor):
            return
        if header.get("type") in ("telemetry.metrics",):
            return
        frame = {"type": "message", "header": header, "body": _cut(jsonable(report.get("body"))),
                 "extra": report.get("extra", []), "latency_ms": report.get("latency_ms")}  # fmt: skip
        if "error" in report:
            frame = {"type": "undecodable", "error": report["error"], "topic": report.get("topic")}
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:
            dropped += 1

    settings = request.app[SETTINGS]
    bus_tap = Tap(Endpoints(settings.bus), sink, TapFilter((kind,) if kind else (), (session,) if session else ()))
    try:
        await bus_tap.start()
    except (TimeoutError, BusError) as exc:
        await ws.send_json({"type": "error", "code": "tap_unavailable", "message": str(exc)})
        await ws.close()
        return ws
    await ws.send_json({"type": "tap", "session": session, "kind": kind, "actor": actor})
    reader = asyncio.create_task(_drain_client(ws))
    try:
        while not ws.closed and not reader.done():
            try:
                frame = await asyncio.wait_for(queue.get(), 1.0)
            except TimeoutError:
                continue
            await ws.send_json(frame)
            if dropped:
                await ws.send_json({"type": "dropped", "count": dropped})
                dropped = 0
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await bus_tap.close()
    return ws


async def _drain_client(ws: web.WebSocketResponse) -> None:
    """The tap page sends nothing we need; reading notices when it goes away."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break
