"""Tools from MCP servers (stdio or Streamable HTTP), through the official ``mcp`` SDK.

Each server lives in its own asyncio task for its whole life (the SDK's anyio scopes must
be entered and left by the same task); calls reach it from any task. A server that cannot
be started is reported and left out: its tools are simply not offered.

The servers start when a task first asks for tools (:meth:`Toolbox.ensure`), not with the
process: the SDK alone (it imports its server side too: starlette, uvicorn) and a running
stdio server cost the actors' process ~40 MB, which a chat that never starts a task should
not pay. The first such task waits for them (~1 s for the filesystem server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Any

import structlog

from config.settings import McpServer

log = structlog.get_logger("greenroom.mcp")
MAX_OUTPUT = 8000  # characters of a tool's output kept for the analyzer
START_TIMEOUT = 8.0  # seconds the servers get to start and list their tools


@dataclass(frozen=True, slots=True)
class Tool:
    server: str
    name: str
    description: str
    schema: dict[str, Any]

    @property
    def qualified(self) -> str:
        return f"{self.server}.{self.name}"

    def openai(self) -> dict[str, Any]:
        """As an OpenAI function tool (names allow only ``[a-zA-Z0-9_-]``)."""
        return {"type": "function", "function": {
            "name": f"{self.server}__{self.name}", "description": self.description[:1000],
            "parameters": self.schema or {"type": "object", "properties": {}},
        }}  # fmt: skip


class ToolError(Exception):
    """A tool could not be called (unknown, server gone, timed out)."""


class Toolbox:
    def __init__(self, servers: tuple[McpServer, ...]) -> None:
        self._specs = servers
        self.tools: dict[str, Tool] = {}
        self.unavailable: dict[str, str] = {}
        self._clients: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()
        self._quiet = open(os.devnull, "w")  # noqa: SIM115 - servers' stderr banners are noise; closed in close()
        self._started: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._started is not None

    async def ensure(self, timeout: float = START_TIMEOUT) -> None:
        """Start the servers the first time it is called; every caller waits for that start."""
        if self._started is None:
            self._started = asyncio.create_task(self.start(timeout), name="mcp:start")
        await asyncio.shield(self._started)

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        waits = []
        for spec in self._specs:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._tasks.append(asyncio.create_task(self._serve(spec, ready), name=f"mcp:{spec.name}"))
            waits.append(ready)
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for spec, fut in zip(self._specs, waits, strict=True):
                if fut in pending:
                    self.unavailable[spec.name] = f"did not start within {timeout:.0f} s"

    async def _serve(self, spec: McpServer, ready: asyncio.Future[None]) -> None:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters

        target: Any
        if spec.url:
            target = spec.url
        else:
            if not _installed(spec.command):
                self.unavailable[spec.name] = f"{spec.command} is not installed"
                log.warning("mcp server not installed", server=spec.name, command=spec.command)
                ready.set_result(None)
                return
            target = StdioServerParameters(command=spec.command, args=list(spec.args))
        try:
            client = Client(target) if spec.url else _stdio_client(target, self._quiet)
            async with client as session:
                listing = await session.list_tools()
                for tool in listing.tools:
                    readonly = bool(tool.annotations and tool.annotations.read_only_hint)
                    if (spec.tools and tool.name in spec.tools) or (not spec.tools and readonly):
                        t = Tool(spec.name, tool.name, tool.description or "", dict(tool.input_schema or {}))
                        self.tools[t.qualified] = t
                self._clients[spec.name] = session
                log.info("mcp server ready", server=spec.name, tools=sorted(self.tools))
                ready.set_result(None)
                await self._closing.wait()
        except Exception as exc:
            self.unavailable[spec.name] = f"{type(exc).__name__}: {exc}"
            log.warning("mcp server unavailable", server=spec.name, error=self.unavailable[spec.name])
        finally:
            self._clients.pop(spec.name, None)
            for name in [n for n, t in self.tools.items() if t.server == spec.name]:
                del self.tools[name]
            if not ready.done():
                ready.set_result(None)

    def resolve(self, name: str) -> Tool | None:
        """A tool by its qualified name, or the ``server__tool`` form models use."""
        return self.tools.get(name) or self.tools.get(name.replace("__", ".", 1))

    async def call(self, name: str, arguments: dict[str, Any], timeout: float) -> tuple[bool, str]:
        """(ok, text output). A tool's own error (``isError``) is ``ok=False``, not an exception."""
        await self.ensure()  # a retried stage may reach an executor never asked for its tools
        tool = self.resolve(name)
        if tool is None:
            raise ToolError(f"no tool {name!r}; available: {', '.join(sorted(self.tools)) or 'none'}")
        session = self._clients.get(tool.server)
        if session is None:
            raise ToolError(f"the {tool.server} tool server is not running")
        try:
            result = await asyncio.wait_for(session.call_tool(tool.name, arguments), timeout)
        except TimeoutError:
            raise ToolError(f"{tool.qualified} did not answer within {timeout:g} s") from None
        texts = [getattr(c, "text", "") for c in result.content if getattr(c, "type", "") == "text"]
        output = "\n".join(texts)
        if len(output) > MAX_OUTPUT:
            output = output[:MAX_OUTPUT] + f"\n… ({len(output) - MAX_OUTPUT} more characters)"
        return not result.is_error, output

    async def close(self) -> None:
        self._closing.set()
        if self._started is not None and not self._started.done():
            with contextlib.suppress(asyncio.CancelledError):
                await self._started
        for task in self._tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 5.0)
        self._quiet.close()


def _installed(command: str) -> bool:
    """A command given as a path must exist; a bare name is looked up on PATH by the SDK."""
    return os.sep not in command or os.path.exists(command)


def _stdio_client(params: Any, errlog: Any) -> Any:
    """``Client`` over stdio with the server's stderr sent to ``errlog``."""
    from mcp import Client
    from mcp.client.stdio import stdio_client

    return Client(stdio_client(params, errlog=errlog))
