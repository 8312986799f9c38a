"""REST: characters, one-shot chat (seeds/000), session history, health."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bus import BusError, new_id
from bus.chat import Accepted, History, HistoryRequest, SessionStarted, StartSession, UserText
from bus.system import Error
from web.keys import CARDS, CONN, HUB
from web.ws import ASK_TIMEOUT, MAX_USER_TEXT

REPLY_TIMEOUT = 120.0


def error(status: int, code: str, message: str) -> web.Response:
    """The JSON error every HTTP endpoint answers with: ``{"error": {"code", "message"}}``."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def query_limit(request: web.Request, default: int) -> int | web.Response:
    """The ``limit`` query parameter, or the error to answer when it is not a number."""
    try:
        return int(request.query.get("limit", str(default)))
    except ValueError:
        return error(400, "bad_limit", "limit must be a number")


async def characters(request: web.Request) -> web.Response:
    return web.json_response([card.public() for card in request.app[CARDS].values()])


async def chat_message(request: web.Request) -> web.Response:
    """Store the message, let the brain pick the agent, store the answer, return it."""
    try:
        payload = await request.json()
    except ValueError:
        return error(400, "bad_json", "the body must be JSON")
    if not isinstance(payload, dict):
        return error(400, "bad_request", "the body must be a JSON object")
    character, text, session = payload.get("character"), payload.get("text"), payload.get("session_id")
    if not isinstance(character, str) or character not in request.app[CARDS]:
        return error(404 if isinstance(character, str) else 400, "unknown_character", f"no character {character!r}")
    if not isinstance(text, str) or not text.strip():
        return error(400, "bad_text", "'text' must be non-empty text")
    if len(text) > MAX_USER_TEXT:
        return error(413, "too_large", f"text of {len(text)} characters; the limit is {MAX_USER_TEXT}")
    if session is not None and not isinstance(session, str):
        return error(400, "bad_session", "'session_id' must be a string")
    conn, hub = request.app[CONN], request.app[HUB]
    try:
        if not session:
            started = await conn.ask(StartSession(character, True), reply=(SessionStarted, Error), timeout=ASK_TIMEOUT)
            if not isinstance(started.body, SessionStarted):
                return error(503, "session_unavailable", started.body.message)
            session = started.body.session
        accepted = await conn.ask(
            UserText(text, "rest", new_id()), reply=(Accepted, Error), session=session, timeout=ASK_TIMEOUT
        )
        if not isinstance(accepted.body, Accepted):  # no such session, or the text cannot be stored
            status = {"bad_text": 400, "not_stored": 503}.get(accepted.body.code, 404)
            return error(status, accepted.body.code, accepted.body.message)
        reply = await hub.reply_for(session, accepted.body.turn, REPLY_TIMEOUT)
    except (TimeoutError, BusError):
        return error(503, "unavailable", "the chat service did not answer in time")
    body = reply.body
    result: dict[str, Any] = {
        "session_id": session,
        "message_id": accepted.body.message_id,
        "turn": accepted.body.turn,
        "reply": {"text": body.text, "emotion": body.emotion, "interrupted": body.interrupted},
    }
    if body.error:
        result["error"] = {"code": body.error}
        return web.json_response(result, status=502)
    return web.json_response(result)


async def session_messages(request: web.Request) -> web.Response:
    session = request.match_info["session_id"]
    limit = query_limit(request, 200)
    if isinstance(limit, web.Response):
        return limit
    try:
        reply = await request.app[CONN].ask(HistoryRequest(limit), reply=History, session=session, timeout=ASK_TIMEOUT)
    except (TimeoutError, BusError):
        return error(503, "unavailable", "the session service did not answer in time")
    if not reply.body.found:
        return error(404, "no_session", f"no session {session!r}")
    return web.json_response(
        {"session_id": session, "character": reply.body.character, "messages": list(reply.body.messages)}
    )


async def healthz(request: web.Request) -> web.Response:
    missing = request.app[HUB].missing()
    status = 200 if not missing else 503
    return web.json_response({"status": "ok" if not missing else "starting", "missing": missing}, status=status)
