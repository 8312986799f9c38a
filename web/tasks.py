"""Headless tasks over HTTP (seeds/003, seeds/004): submit, stream progress as SSE, state, cancel.

``GET /api/stream/{id}`` sends ``id:``-numbered events; a client that reconnects with
``Last-Event-ID`` (EventSource does it by itself) gets exactly the events it missed.
Step events are unnamed (``onmessage``); the task's failure is ``event: error`` and its
last event ``event: end``, after which the stream closes. Idle streams get a keep-alive
comment. A client that goes away cancels nothing: the task runs on.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp import web

from bus import BusError, new_id
from bus.system import Error
from bus.tasks import CancelTask, GetTask, ReplayRequest, SubmitTask, TaskAccepted, TaskEvents, TaskInfo
from web.hub import RESYNC
from web.keys import CONN, HUB, SETTINGS
from web.rest import error as _error
from web.ws import ASK_TIMEOUT

MAX_QUERY = 4000
MAX_USER = 200
RETRY_MS = 3000


class _Denied(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _user(request: web.Request) -> str | None:
    """The caller's user when tokens are configured (None: auth is off)."""
    tokens = dict(request.app[SETTINGS].api_tokens)
    if not tokens:
        return None
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.query.get("token", "")
    user = tokens.get(token)
    if user is None:
        why = "a valid API token is required (Authorization: Bearer …, or ?token= for EventSource)"
        raise _Denied(_error(401, "unauthorized", why))
    return user


def _task_id(request: web.Request) -> str:
    task_id = request.match_info["task_id"]
    if not (0 < len(task_id) <= 64) or not all(c.isalnum() or c in "-_" for c in task_id):
        raise _Denied(_error(400, "bad_task_id", "a task id is letters, digits, '-' and '_'"))
    return task_id


def _owned(user: str | None, owner: str) -> None:
    if user is not None and owner != user:
        raise _Denied(_error(403, "forbidden", "this task belongs to someone else"))


async def submit(request: web.Request) -> web.Response:
    try:
        user = _user(request)
        payload = await request.json()
    except _Denied as denied:
        return denied.response
    except ValueError:
        return _error(400, "bad_json", "the body must be JSON")
    if not isinstance(payload, dict):
        return _error(400, "bad_request", "the body must be a JSON object")
    query, user_id = payload.get("query"), payload.get("user_id", "")
    if not isinstance(query, str) or not query.strip():
        return _error(400, "bad_query", "'query' must be non-empty text")
    if len(query) > MAX_QUERY:
        return _error(413, "too_large", f"query of {len(query)} characters; the limit is {MAX_QUERY}")
    if not isinstance(user_id, str) or len(user_id) > MAX_USER:
        return _error(400, "bad_user", f"'user_id' must be text of at most {MAX_USER} characters")
    if user is not None:
        if user_id and user_id != user:
            return _error(403, "forbidden", "user_id does not match your token")
        user_id = user
    task_id = "wf-" + uuid.uuid4().hex[:20]
    try:
        reply = await request.app[CONN].ask(
            SubmitTask(query.strip(), user_id), reply=(TaskAccepted, Error), session=task_id, timeout=ASK_TIMEOUT
        )
    except (TimeoutError, BusError):
        return _error(503, "unavailable", "the task service did not answer in time")
    if isinstance(reply.body, Error):
        return _error(400, reply.body.code, reply.body.message)
    return web.json_response(
        {"workflow_id": task_id, "stream_url": f"/api/stream/{task_id}", "status_url": f"/api/v1/tasks/{task_id}"},
        status=202,
    )


async def _info(request: web.Request, body: GetTask | CancelTask, task_id: str) -> TaskInfo:
    try:
        reply = await request.app[CONN].ask(body, reply=TaskInfo, session=task_id, timeout=ASK_TIMEOUT)
    except (TimeoutError, BusError):
        raise _Denied(_error(503, "unavailable", "the task service did not answer in time")) from None
    info: TaskInfo = reply.body
    if not info.found or info.task is None:
        raise _Denied(_error(404, "no_task", f"no task {task_id!r}"))
    return info


async def _own_task(request: web.Request) -> tuple[str, dict[str, Any]]:
    """The task the request names, once the caller may see it: ``(id, task)``."""
    user, task_id = _user(request), _task_id(request)
    info = await _info(request, GetTask(), task_id)
    assert info.task is not None
    _owned(user, info.task["user_id"])
    return task_id, info.task


async def get_task(request: web.Request) -> web.Response:
    try:
        _, task = await _own_task(request)
    except _Denied as denied:
        return denied.response
    return web.json_response(task)


async def cancel_task(request: web.Request) -> web.Response:
    try:
        task_id, _ = await _own_task(request)
        info = await _info(request, CancelTask(), task_id)
    except _Denied as denied:
        return denied.response
    assert info.task is not None
    if not info.changed:
        return web.json_response(
            {"error": {"code": "task_finished", "message": f"the task is already {info.task['state']}"},
             "task": info.task}, status=409,
        )  # fmt: skip
    return web.json_response(info.task)


def _sse(event: dict[str, Any]) -> bytes:
    name = {"end": "end", "error": "error"}.get(str(event.get("step")))
    head = f"id: {event['id']}\n" + (f"event: {name}\n" if name else "")
    return (head + "data: " + json.dumps(event, ensure_ascii=False) + "\n\n").encode()


async def stream(request: web.Request) -> web.StreamResponse:
    try:
        user, task_id = _user(request), _task_id(request)
    except _Denied as denied:
        return denied.response
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    try:
        after = int(raw)
        if after < 0:
            raise ValueError
    except ValueError:
        return _error(400, "bad_last_event_id", f"Last-Event-ID must be an event id (a number), not {raw[:40]!r}")
    hub, conn = request.app[HUB], request.app[CONN]
    queue = hub.watch_task(task_id)  # first: nothing published from now on is missed
    try:
        replay = await _replay(conn, task_id, after)
        if not replay.found:
            return _error(404, "no_task", f"no task {task_id!r}")
        _owned(user, replay.owner)
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
        })  # fmt: skip
        await resp.prepare(request)
        await resp.write(f"retry: {RETRY_MS}\n\n".encode())
        await _pump(request, resp, queue, replay, last=after, task_id=task_id)
        return resp
    except _Denied as denied:
        return denied.response
    except (TimeoutError, BusError):
        return _error(503, "unavailable", "the task service did not answer in time")
    except (ConnectionResetError, ConnectionError):
        return web.Response(status=499)  # the client left; nothing to tell it
    finally:
        hub.unwatch_task(task_id, queue)


async def _replay(conn: Any, task_id: str, after: int) -> TaskEvents:
    session = f"replay:{new_id()}"  # its own lane in the manager: see ReplayRequest
    reply = await conn.ask(ReplayRequest(task_id, after), reply=TaskEvents, session=session, timeout=ASK_TIMEOUT)
    body: TaskEvents = reply.body
    return body


async def _pump(
    request: web.Request, resp: web.StreamResponse, queue: asyncio.Queue[dict[str, Any]], replay: TaskEvents,
    *, last: int, task_id: str,
) -> None:  # fmt: skip
    keepalive = request.app[SETTINGS].sse_keepalive
    while True:
        for event in replay.events:
            if event["id"] > last:
                await resp.write(_sse(event))
                last = event["id"]
        if replay.finished:
            return
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if event is RESYNC or event["id"] > last + 1:  # we fell behind: fetch what we missed
                replay = await _replay(request.app[CONN], task_id, last)
                break
            if event["id"] <= last:
                continue
            await resp.write(_sse(event))
            last = event["id"]
            if event["step"] == "end":
                return
