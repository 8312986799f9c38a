"""run.py: every part is listed, and bad input exits 2 with a clear message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from bus import Broker, Connection, Endpoints
from bus.system import Ready
from tests.conftest import free_tcp_base
from tests.helpers import spawn, stop


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


def test_with_no_model_configured_the_edge_waits_for_the_embedded_one() -> None:
    """run.py hosts the embedded model itself (a supervised part) and the edge (in its own
    process, where the settings still say no model is configured): /healthz must count the
    model among the actors it waits for."""
    import run
    from config import load_settings
    from web.app import required_actors

    args = run._parser().parse_args([])
    hosted = load_settings({"GREENROOM_CONFIG": "/dev/null"})
    assert [s.name for s in run._specs(args, hosted)] == [*(g.name for g in hosted.groups), "llm"]
    assert "llm" in required_actors(hosted)
    configured = load_settings({"GREENROOM_CONFIG": "/dev/null", "OPENAI_BASE_URL": "http://x/v1"})
    assert "llm" not in [s.name for s in run._specs(args, configured)]
    assert "llm" not in required_actors(configured)


def test_the_parts_are_told_whether_to_ask_for_emotion_tags() -> None:
    """The embedded model never writes the tag: its parts leave it out of the prompt (the
    character agent and the model's warm-up alike, or the warmed prefix would not match);
    a configured model is asked; an explicit choice is passed on as it is."""
    import run
    from config import load_settings

    def told(**env: str) -> dict[str, str]:
        return run._model_env(load_settings({"GREENROOM_CONFIG": "/dev/null", **env}))

    assert told() == {"GREENROOM_EMOTION_TAGS": "off", "OPENAI_BASE_URL": "http://127.0.0.1:8766/v1"}
    assert told(GREENROOM_EMOTION_TAGS="on")["GREENROOM_EMOTION_TAGS"] == "on"
    assert told(OPENAI_BASE_URL="http://x/v1") == {"GREENROOM_EMOTION_TAGS": "on"}
    assert told(OPENAI_BASE_URL="http://x/v1", GREENROOM_EMOTION_TAGS="off") == {"GREENROOM_EMOTION_TAGS": "off"}
    for env in told(), told(OPENAI_BASE_URL="http://x/v1"):  # what a part makes of what it is told
        part = load_settings({"GREENROOM_CONFIG": "/dev/null", "OPENAI_BASE_URL": "http://127.0.0.1:8766/v1", **env})
        assert part.asks_emotion_tags == (env["GREENROOM_EMOTION_TAGS"] == "on")


async def test_healthz_waits_for_every_required_actor(short_tmp: Path) -> None:
    endpoints = Endpoints(f"ipc://{short_tmp}/bus")
    config = short_tmp / "lean.toml"
    config.write_text('[[groups]]\nname = "echo"\nactors = ["echo"]\n')
    port = free_tcp_base(1)
    # OPENAI_BASE_URL as run.py sets it for its parts: to the edge, a model "configured".
    env = {"GREENROOM_CONFIG": str(config), "GREENROOM_HTTP_PORT": str(port), "DATABASE_URL": "postgresql://unused/x",
           "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}  # fmt: skip
    with Broker(endpoints):
        edge = await spawn("--bus", endpoints.events_out, "edge", "--require", "llm", env=env)
        conn = Connection(endpoints, "fake-hosts")
        await conn.start()
        try:
            async with aiohttp.ClientSession() as http:

                async def health(expected: tuple[int, list[str]]) -> None:
                    """Polls /healthz until it answers ``expected`` (the edge starts, Ready travels)."""
                    seen = None
                    for _ in range(100):
                        try:
                            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                                seen = resp.status, (await resp.json())["missing"]
                                if seen == expected:
                                    return
                        except aiohttp.ClientConnectionError:
                            pass
                        await asyncio.sleep(0.05)
                    raise AssertionError(f"/healthz answered {seen}, not {expected}")

                await health((503, ["echo", "llm"]))
                await conn.publish(Ready("echo", 1, ("echo",)))
                await health((503, ["llm"]))
                await conn.publish(Ready("llm", 2, ("llm",)))
                await health((200, []))
        finally:
            await conn.close()
            assert await stop(edge) == 0
