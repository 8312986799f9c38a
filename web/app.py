"""The aiohttp application: routes, shared state through AppKeys, start/stop in cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from aiohttp import WSCloseCode, web

from bus import Connection, Endpoints, type_prefix
from bus.system import Heartbeat, Ready
from config.characters import load_cards
from config.process import settle_heap
from config.settings import Settings
from web import rest, tasks, telemetry
from web.hub import Hub
from web.keys import CARDS, CONN, HUB, SETTINGS, SOCKETS
from web.ws import websocket

STATIC = Path(__file__).resolve().parent / "static"
# Exactly what the edge forwards or waits for: decoding the rest (turns and work items carry
# the history) would be wasted on the hot path.
EDGE_TYPES = (
    "chat.delta", "chat.emotion", "chat.status", "chat.error", "chat.reply", "chat.user_text", "chat.accepted",
    "chat.started", "chat.history", "sys.interrupt", "sys.heartbeat", "sys.ready", "sys.error", "diag.pong",
    "voice.audio_out", "voice.transcript", "chat.agent_notification", "chat.task_result", "task.progress",
    "task.accepted", "task.events", "task.info", "telemetry.metrics", "telemetry.sessions", "telemetry.session",
)  # fmt: skip


def required_actors(settings: Settings) -> list[str]:
    names = [a for g in settings.groups for a in g.actors]
    if settings.llm_base_url is None:
        names.append("llm")
    return names


def create_app(settings: Settings, required: Iterable[str] | None = None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[CARDS] = load_cards()
    app[SOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(_bus(list(required if required is not None else required_actors(settings))))
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/ws/{character}", websocket)
    app.router.add_get("/api/characters", rest.characters)
    app.router.add_post("/api/v1/chat/message", rest.chat_message)
    app.router.add_get("/api/v1/sessions/{session_id}/messages", rest.session_messages)
    app.router.add_get("/healthz", rest.healthz)
    app.router.add_post("/api/query", tasks.submit)
    app.router.add_get("/api/stream/{task_id}", tasks.stream)
    app.router.add_get("/api/v1/tasks/{task_id}", tasks.get_task)
    app.router.add_post("/api/v1/tasks/{task_id}/cancel", tasks.cancel_task)
    app.router.add_get("/api/v1/telemetry/sessions", telemetry.sessions)
    app.router.add_get("/api/v1/telemetry/sessions/{session_id}", telemetry.session)
    app.router.add_get("/metrics", telemetry.metrics)
    app.router.add_get("/ws/tap", telemetry.tap)
    app[telemetry.METRICS] = telemetry.metrics_registry(app)
    app.router.add_get("/", _index)
    app.router.add_get("/tasks", _page("tasks.html"))
    app.router.add_get("/telemetry", _page("telemetry.html"))
    app.router.add_get("/tap", _page("tap.html"))
    app.router.add_static("/static", STATIC)
    return app


def _bus(required: list[str]):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        conn = Connection(Endpoints(settings.bus), "edge")
        hub = Hub(conn, required, settings.heartbeat_timeout)
        await conn.start(hub.on_message, subscribe=[type_prefix(t) for t in EDGE_TYPES])
        app[CONN], app[HUB] = conn, hub
        beat = asyncio.create_task(_heartbeat(conn, hub, app, settings.heartbeat))
        await conn.publish(Ready("edge", os.getpid(), ("edge",)))
        yield
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        await conn.close()

    return ctx


async def _heartbeat(conn: Connection, hub: Hub, app: web.Application, every: float) -> None:
    start = time.monotonic()
    while True:
        await asyncio.sleep(every)
        stats = {**conn.stats, **hub.stats, "ws_connections": len(app[SOCKETS]), "sessions": len(hub.sessions)}
        await conn.publish(Heartbeat("edge", os.getpid(), ("edge",), time.monotonic() - start, stats))


async def _close_sockets(app: web.Application) -> None:
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


def _page(name: str):  # type: ignore[no-untyped-def]
    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name)

    return page


async def serve(settings: Settings, stop: asyncio.Event, require: Iterable[str] = ()) -> None:
    """Run the edge until ``stop`` is set; /healthz waits for ``require`` too."""
    runner = web.AppRunner(create_app(settings, [*required_actors(settings), *require]), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    settle_heap()
    import structlog

    structlog.get_logger("greenroom.edge").info(
        "edge listening", url=f"http://{settings.http_host}:{settings.http_port}/"
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
