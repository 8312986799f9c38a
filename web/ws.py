"""WebSocket ``/ws/{character}``: the browser protocol of seeds/003.

One reader (this handler) and one sender task per socket. Every malformed frame gets an
``{"type":"error","code","message"}`` frame and the socket stays open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from typing import Any

from aiohttp import WSMsgType, web

from bus import BusError, new_id
from bus.chat import Accepted, EndSession, SessionStarted, StartSession, UserText
from bus.system import Error, Ping, Pong
from bus.telemetry import Mark
from bus.voice import AudioIn
from web.hub import Client
from web.keys import CARDS, CONN, HUB, SOCKETS

MAX_FRAME = 4 * 1024 * 1024  # hard limit (aiohttp closes with 1009 beyond it)
MAX_TEXT_FRAME = 64 * 1024  # larger frames get an error frame
MAX_USER_TEXT = 4000
ASK_TIMEOUT = 10.0  # how long the edge waits for an actor's answer
AUDIO_RATES = (8000, 96000)
"""Sample rates accepted for microphone audio, Hz."""
MAX_AUDIO_BACKLOG = 2.0
"""Seconds of audio a socket may send ahead of real time (bursts); beyond, chunks are refused."""


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


async def websocket(request: web.Request) -> web.StreamResponse:
    character = request.match_info["character"]
    if character not in request.app[CARDS]:
        return web.json_response(
            {"error": {"code": "unknown_character", "message": f"no character {character!r}"}}, status=404
        )
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=MAX_FRAME)
    await ws.prepare(request)
    client = Client(new_id(), character)
    sender = asyncio.create_task(_send_loop(ws, client), name=f"ws-send:{client.id}")
    request.app[SOCKETS].add(ws)
    session = Session(request.app, client)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                client.send(_error("binary_not_supported", "send JSON text frames"))
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        request.app[HUB].detach(client)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return ws


async def _send_loop(ws: web.WebSocketResponse, client: Client) -> None:
    while True:
        frame = await client.queue.get()
        if frame is None:
            if client.overflowed:
                await ws.close(code=1008, message=b"client too slow: send queue overflowed")
            return
        await ws.send_str(json.dumps(frame))


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


class Session:
    """Protocol state of one socket."""

    def __init__(self, app: web.Application, client: Client) -> None:
        self.app = app
        self.client = client
        self.conn = app[CONN]
        self.hub = app[HUB]
        self.input_type = "text"
        self.rate = 48_000
        self.audio_seq = 0
        self._audio_clock = 0.0  # when the audio sent so far would have finished playing
        self._flood_reported = 0.0

    async def handle(self, raw: str) -> None:
        try:
            await self._dispatch(self._parse(raw))
        except ProtocolError as exc:
            self.client.send(_error(exc.code, exc.message))

    def _parse(self, raw: str) -> dict[str, Any]:
        if len(raw) > MAX_TEXT_FRAME:
            raise ProtocolError("too_large", f"frame of {len(raw)} bytes; the limit is {MAX_TEXT_FRAME}")
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise ProtocolError("bad_json", f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ProtocolError("bad_frame", "a frame must be a JSON object with an 'action'")
        action = obj.get("action")
        if not isinstance(action, str):
            raise ProtocolError("bad_frame", "missing string field 'action'")
        return obj

    async def _dispatch(self, obj: dict[str, Any]) -> None:
        match obj["action"]:
            case "ping":
                self.client.send({"type": "pong"})
            case "bus_ping":
                await self._bus_ping()
            case "start_session":
                await self._start(obj)
            case "stream_data":
                await self._stream(obj)
            case "end_session":
                await self._end()
            case "playback_started":
                turn = obj.get("turn")
                if self.client.session is None or type(turn) is not int or turn < 1:
                    raise ProtocolError("bad_frame", "playback_started needs a session and its integer 'turn'")
                await self.conn.publish(Mark("playback_started"), session=self.client.session, turn=turn)
            case other:
                raise ProtocolError(
                    "unknown_action",
                    f"unknown action {other!r}; expected start_session, stream_data, end_session, ping,"
                    " playback_started",
                )

    async def _bus_ping(self) -> None:
        """A full WS -> bus -> echo actor -> bus -> WS round trip (diagnostics, benchmarks)."""
        t0 = time.perf_counter()
        try:
            await self.conn.ask(Ping("ws"), reply=Pong, timeout=2.0)
        except (TimeoutError, BusError):
            raise ProtocolError("bus_unavailable", "the echo actor did not answer") from None
        self.client.send({"type": "pong", "via": "bus", "rtt_ms": (time.perf_counter() - t0) * 1000})

    async def _start(self, obj: dict[str, Any]) -> None:
        input_type = obj.get("input_type", "text")
        if input_type not in ("text", "audio"):
            raise ProtocolError("bad_input_type", "input_type must be 'text' or 'audio'")
        new_session = obj.get("new_session", True)
        if not isinstance(new_session, bool):
            raise ProtocolError("bad_frame", "new_session must be true or false")
        resume = obj.get("session_id") or ""
        if not isinstance(resume, str) or len(resume) > 64:
            raise ProtocolError("bad_frame", "session_id must be a string")
        rate = obj.get("sample_rate", 48_000)
        if not isinstance(rate, int) or isinstance(rate, bool) or not AUDIO_RATES[0] <= rate <= AUDIO_RATES[1]:
            raise ProtocolError(
                "bad_sample_rate", f"sample_rate must be an integer from {AUDIO_RATES[0]} to {AUDIO_RATES[1]} Hz"
            )
        speak = obj.get("speak", input_type == "audio")
        if not isinstance(speak, bool):
            raise ProtocolError("bad_frame", "speak must be true or false")
        start = StartSession(self.client.character, new_session, resume, input_type, speak)
        started = await self._ask(start, SessionStarted)
        if not isinstance(started.body, SessionStarted):  # the session manager failed and said so
            raise ProtocolError("session_unavailable", started.body.message)
        body: SessionStarted = started.body
        self.input_type, self.rate, self.audio_seq = input_type, rate, 0
        self.hub.attach(self.client, body.session)
        self.client.send({"type": "status", "status": "idle", "message": "Session started",
                          "session_id": body.session, "resumed": body.resumed})  # fmt: skip
        if body.greeting:
            self.client.send({"type": "transcript", "speaker": "assistant", "text": body.greeting, "isFinal": True})

    async def _stream(self, obj: dict[str, Any]) -> None:
        session = self.client.session
        if session is None:
            raise ProtocolError("no_session", "send start_session first")
        input_type = obj.get("input_type")
        data = obj.get("data")
        if input_type == "audio":
            await self._audio(session, data)
            return
        if input_type != "text":
            raise ProtocolError("bad_input_type", "input_type must be 'text' or 'audio'")
        if not isinstance(data, str) or not data.strip():
            raise ProtocolError("bad_data", "data must be non-empty text")
        if len(data) > MAX_USER_TEXT:
            raise ProtocolError("too_large", f"text of {len(data)} characters; the limit is {MAX_USER_TEXT}")
        reply = await self._ask(UserText(data, "ws", self.client.id), Accepted, session=session)
        if not isinstance(reply.body, Accepted):
            raise ProtocolError(reply.body.code or "not_accepted", reply.body.message)

    async def _audio(self, session: str, data: Any) -> None:
        if self.input_type != "audio":
            raise ProtocolError("not_audio_session", "start the session with input_type 'audio' to send audio")
        if not isinstance(data, str) or not data:
            raise ProtocolError("bad_audio", "data must be base64 PCM16 mono audio")
        try:
            pcm = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("bad_audio", "data is not valid base64") from None
        if len(pcm) % 2:
            raise ProtocolError("bad_audio", f"odd byte count ({len(pcm)}): PCM16 needs two bytes a sample")
        now = time.monotonic()
        self._audio_clock = max(self._audio_clock, now) + len(pcm) / 2 / self.rate
        if self._audio_clock - now > MAX_AUDIO_BACKLOG:
            self._audio_clock -= len(pcm) / 2 / self.rate  # refused: it does not count
            if now - self._flood_reported > 1.0:
                self._flood_reported = now
                raise ProtocolError(
                    "audio_flood", f"audio arrives faster than real time at {self.rate} Hz; chunks are being refused"
                )
            return
        await self.conn.publish(AudioIn(self.audio_seq, self.rate), session=session, extra=(pcm,))
        self.audio_seq += 1

    async def _end(self) -> None:
        session = self.client.session
        if session is None:
            raise ProtocolError("no_session", "no session to end")
        await self.conn.publish(EndSession("client"), session=session)
        self.hub.detach(self.client)
        self.client.send({"type": "status", "status": "ended", "message": "Session ended"})

    async def _ask(self, body: Any, reply: type, session: str = "") -> Any:
        try:
            return await self.conn.ask(body, reply=(reply, Error), session=session, timeout=ASK_TIMEOUT)
        except TimeoutError:
            raise ProtocolError("unavailable", "the session service did not answer; try again") from None
        except BusError as exc:
            raise ProtocolError("unavailable", str(exc)) from None
