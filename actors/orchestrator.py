"""Orchestrator: decides which agent handles each user turn and hands it over as work.

Questions about data go to the task agents when they are running (their task manager's
heartbeats say so): the task is submitted on the chat's behalf — its progress comes back
as ``agent_notification`` frames and its result joins the next turn — and the character
still answers at once, knowing the work has started.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from actors.actor import Actor
from brain.routing import TASK, route
from bus import Envelope
from bus.chat import Generate, Routed, TurnStarted
from bus.system import Heartbeat, Ready
from bus.tasks import SubmitTask
from config.settings import settings

TASK_STARTED = (
    "You have just asked the shop's analysts (the task agents) to work on the user's request; their "
    "progress shows on the user's screen and their answer will reach you. Tell the user, briefly and in "
    "character, that you are looking into it. Do not invent any numbers."
)


class Orchestrator(Actor):
    name = "orchestrator"
    handles = (TurnStarted, Heartbeat, Ready)

    async def on_start(self) -> None:
        self._tasks_seen = -1e9
        self._timeout = settings().heartbeat_timeout

    @property
    def tasks_available(self) -> bool:
        return time.monotonic() - self._tasks_seen < self._timeout

    async def on_message(self, env: Envelope[Any]) -> None:
        body = env.body
        if isinstance(body, Heartbeat | Ready):
            if "tasks" in body.actors:
                self._tasks_seen = time.monotonic()
            return
        if not isinstance(body, TurnStarted):
            return
        decision = route(body.text, tasks_available=self.tasks_available)
        context = body.context
        if decision.agent == TASK:
            task_id = "wf-" + uuid.uuid4().hex[:20]
            await self.bus.publish(SubmitTask(body.text, f"chat:{env.session}", env.session), session=task_id)
            context = "\n\n".join(filter(None, (context, TASK_STARTED)))
        work = Generate(body.character, body.text, body.history, context, body.speak)
        await self.bus.push("character", work, cause=env)
        await self.bus.publish(Routed(decision.agent, decision.reason), cause=env)
