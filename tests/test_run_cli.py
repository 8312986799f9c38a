"""run.py: every part is listed, and bad input exits 2 with a clear message."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import spawn


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await spawn(*args, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_help_lists_every_part() -> None:
    code, out, _ = await run("--help")
    assert code == 0
    for part in ("broker", "actor", "tap", "record", "replay", "--bus"):
        assert part in out


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--bus", "http://nope", "tap"), None, "bad bus address 'http://nope'"),
        (("tap",), {"GREENROOM_BUS": "tcp://host-without-port"}, "tcp needs HOST:PORT"),
        (("--bus", "tcp://127.0.0.1:1", "actor", "no-such-actor"), None, "unknown actor 'no-such-actor'"),
        (("--bus", "tcp://127.0.0.1:1", "replay", "/nonexistent/file"), None, "No such file"),
        (("tap",), {"GREENROOM_CONFIG": "/nonexistent.toml"}, "configuration error"),
    ],
)
async def test_bad_input_exits_2_with_a_clear_message(
    args: tuple[str, ...], env: dict[str, str] | None, message: str
) -> None:
    code, _, err = await run(*args, env=env)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
