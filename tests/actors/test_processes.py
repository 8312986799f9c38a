"""Actors as real OS processes: ipc and tcp, supervisor restarts, hang detection, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench.common import wait_healthy
from bus import Broker, Connection, Endpoints
from bus.system import Heartbeat, Ping, Pong, ProcessEvent, Ready
from tests.conftest import free_tcp_base
from tests.helpers import Collector, process_gone, spawn, stop


@pytest.fixture(params=["ipc", "tcp"])
def any_endpoints(request: pytest.FixtureRequest, short_tmp: Path) -> Endpoints:
    if request.param == "ipc":
        return Endpoints(f"ipc://{short_tmp}/bus")
    return Endpoints(f"tcp://127.0.0.1:{free_tcp_base()}")


async def test_actors_in_separate_processes(any_endpoints: Endpoints) -> None:
    with Broker(any_endpoints):
        watcher = Collector(any_endpoints)
        await watcher.start()
        procs = [await spawn("--bus", any_endpoints.events_out, "actor", "echo", "--name", f"echo{i}") for i in (1, 2)]
        try:
            ready = await watcher.expect_n(Ready, 2, timeout=20)
            assert {r.body.name for r in ready} == {"echo1", "echo2"}
            asker = Connection(any_endpoints, "asker")
            await asker.start()
            # events: both replicas answer a published ping
            await asker.publish(Ping("all"))
            pongs = await watcher.expect_n(Pong, 2, lambda b: b.text == "all")
            assert len({p.header.src for p in pongs}) == 2
            # work: each pushed ping is answered once, spread over both processes
            answers = [await asker.ask(Ping(f"w{i}"), reply=Pong, queue="echo") for i in range(20)]
            assert [a.body.text for a in answers] == [f"w{i}" for i in range(20)]
            assert len({a.header.src for a in answers}) == 2
            await asker.close()
        finally:
            for proc in procs:
                assert await stop(proc) == 0
        await watcher.close()


@pytest.fixture
async def system(short_tmp: Path) -> AsyncIterator[dict[str, Any]]:
    """`python run.py` (supervisor, broker, edge, actor groups) on an ipc bus in a temporary data dir.

    Lean on purpose: only the echo group, an external database and model configured (never
    contacted), and free ports, so supervision is what is tested.
    """
    config = short_tmp / "lean.toml"
    config.write_text('[[groups]]\nname = "echo"\nactors = ["echo"]\n')
    env = {
        "GREENROOM_DATA_DIR": str(short_tmp), "GREENROOM_CONFIG": str(config),
        "GREENROOM_HEARTBEAT": "0.2", "GREENROOM_HEARTBEAT_TIMEOUT": "1.5",
        "GREENROOM_HTTP_PORT": str(free_tcp_base(1)), "DATABASE_URL": "postgresql://unused/none",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }  # fmt: skip
    log_file = (short_tmp / "system.log").open("wb")  # a pipe nobody reads could fill and block it
    proc = await spawn(env=env, stderr=log_file)
    endpoints = Endpoints(f"ipc://{short_tmp}/run/bus")
    watcher = Collector(endpoints)
    try:
        await watcher.start()  # ZeroMQ connects before the broker binds: it just waits
        # sys.ready is sent once and may precede our subscription; heartbeats repeat (0.2 s).
        ready = await watcher.expect(Heartbeat, lambda b: b.name == "echo", timeout=20)
    except BaseException:
        await stop(proc)
        print((short_tmp / "system.log").read_text()[-3000:])
        raise
    yield {"proc": proc, "endpoints": endpoints, "watcher": watcher, "ready": ready, "dir": short_tmp, "env": env}
    await watcher.close()
    if proc.returncode is None:
        await stop(proc)
    log_file.close()


async def test_killed_actor_is_restarted_and_handles_the_next_message(system: dict[str, Any]) -> None:
    watcher: Collector = system["watcher"]
    old_pid = system["ready"].body.pid
    os.kill(old_pid, signal.SIGKILL)
    exited = await watcher.expect(ProcessEvent, lambda b: b.event == "exited")
    assert exited.body.pid == old_pid and exited.body.code == -signal.SIGKILL
    again = await watcher.expect(Ready, lambda b: b.name == "echo" and b.pid != old_pid, timeout=20)
    asker = Connection(system["endpoints"], "asker")
    await asker.start()
    reply = await asker.ask(Ping("after restart"), reply=Pong, queue="echo")
    assert reply.body.text == "after restart"
    assert reply.header.src.startswith("echo@")
    await asker.close()
    restarted = await watcher.expect(ProcessEvent, lambda b: b.event == "started" and b.pid == again.body.pid)
    assert restarted.body.restarts == 1


async def test_hung_actor_is_killed_and_restarted(system: dict[str, Any]) -> None:
    watcher: Collector = system["watcher"]
    old_pid = system["ready"].body.pid
    os.kill(old_pid, signal.SIGSTOP)  # alive but silent: no more heartbeats
    hung = await watcher.expect(ProcessEvent, lambda b: b.event == "hung", timeout=10)
    assert hung.body.pid == old_pid
    await watcher.expect(Ready, lambda b: b.name == "echo" and b.pid != old_pid, timeout=20)


async def test_sigterm_stops_everything_cleanly(system: dict[str, Any]) -> None:
    child = system["ready"].body.pid
    assert await stop(system["proc"], timeout=8) == 0
    await process_gone(child, timeout=1)
    run_dir = Path(system["dir"]) / "run"
    assert not any(run_dir.iterdir()), f"socket files left behind: {list(run_dir.iterdir())}"


async def test_children_die_with_a_killed_supervisor(system: dict[str, Any]) -> None:
    child = system["ready"].body.pid
    system["proc"].kill()
    await system["proc"].wait()
    await process_gone(child, timeout=10)


async def test_healthz_is_served_from_the_supervisors_own_process(system: dict[str, Any]) -> None:
    """The edge runs in run.py's process next to the broker: no part of its own."""
    await wait_healthy(f"http://127.0.0.1:{system['env']['GREENROOM_HTTP_PORT']}", timeout=20)
    assert _part_names(system["proc"].pid) == [b"echo"]  # the echo group and nothing else


def _part_names(pid: int) -> list[bytes]:
    """The ``--name`` of each child process of ``pid``."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    parts = [Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0") for child in children]
    return [part[part.index(b"--name") + 1] for part in parts]


async def test_a_taken_http_port_stops_everything_with_a_clear_error(short_tmp: Path) -> None:
    config = short_tmp / "lean.toml"
    config.write_text('[[groups]]\nname = "echo"\nactors = ["echo"]\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {"GREENROOM_DATA_DIR": str(short_tmp), "GREENROOM_CONFIG": str(config),
               "GREENROOM_HTTP_PORT": str(taken.getsockname()[1]), "DATABASE_URL": "postgresql://unused/none",
               "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "GREENROOM_LOG_FORMAT": "json"}  # fmt: skip
        proc = await spawn(env=env)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "the edge stopped; stopping everything" in err.decode()
    assert "address already in use" in err.decode().lower()
