"""actors.mcp_tools.Toolbox: the tool servers start when first needed, once, for every caller."""

from __future__ import annotations

import asyncio

from actors.mcp_tools import Toolbox
from config.settings import ROOT, McpServer
from tests.tasks.conftest import MCP_SERVER


async def test_the_servers_start_on_first_need_once_for_everyone_who_waits() -> None:
    assert MCP_SERVER.exists(), "the MCP filesystem server is installed by `make test` (npm)"
    spec = McpServer("files", str(MCP_SERVER), (str(ROOT / "config" / "files"),), tools=("list_directory",))
    box = Toolbox((spec,))
    try:
        assert box.tools == {}
        assert not box.started  # nothing runs until a task asks
        await asyncio.gather(*(box.ensure() for _ in range(3)))
        assert list(box.tools) == ["files.list_directory"]
        ok, listing = await box.call("files__list_directory", {"path": str(ROOT / "config" / "files")}, 10)
        assert ok and listing
        starts = [t for t in asyncio.all_tasks() if t.get_name() == "mcp:files"]
        assert len(starts) == 1  # three callers, one server
    finally:
        await box.close()


async def test_a_toolbox_never_asked_closes_without_starting_anything() -> None:
    box = Toolbox((McpServer("files", str(MCP_SERVER)),))
    await box.close()
    assert not box.started
