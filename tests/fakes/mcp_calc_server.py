"""An MCP server over Streamable HTTP, built with the official SDK's own server (``MCPServer``).

``python -m tests.fakes.mcp_calc_server PORT``: one tool, ``add``, for the HTTP transport tests.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

app = MCPServer("calc")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    app.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
