"""Orchestrator: decides which agent handles each user turn and hands it over as work."""

from __future__ import annotations

from typing import Any

from actors.actor import Actor
from brain.routing import CHARACTER, route
from bus import Envelope
from bus.chat import Generate, Routed, TurnStarted


class Orchestrator(Actor):
    name = "orchestrator"
    handles = (TurnStarted,)
    tasks_available = False  # the task agents arrive with the tasks issue

    async def on_message(self, env: Envelope[Any]) -> None:
        body: TurnStarted = env.body
        decision = route(body.text, tasks_available=self.tasks_available)
        if decision.agent == CHARACTER:
            await self.bus.push("character", Generate(body.character, body.text, body.history), cause=env)
        await self.bus.publish(Routed(decision.agent, decision.reason), cause=env)
