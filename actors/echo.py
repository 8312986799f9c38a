"""Echo: answers every ``diag.ping`` (event or work on the ``echo`` queue) with a ``diag.pong``.

Used for health checks, benchmarks and tests of the runtime itself.
"""

from __future__ import annotations

from typing import Any

from actors.actor import Actor
from bus import Envelope
from bus.system import Ping, Pong


class Echo(Actor):
    name = "echo"
    handles = (Ping,)
    queues = ("echo",)

    async def on_message(self, env: Envelope[Any]) -> None:
        body = env.body
        if isinstance(body, Ping):
            await self.bus.publish(Pong(body.text, body.payload, by=self.bus.src), cause=env)
