"""The one-address rule."""

from __future__ import annotations

import pytest

from bus import BusError, Endpoints


def test_tcp_rule() -> None:
    ep = Endpoints("tcp://10.0.0.5:5560")
    assert ep.events_in == "tcp://10.0.0.5:5561"
    assert ep.queue_push("echo") == "tcp://10.0.0.5:5562"
    assert ep.queue_pull("echo") == "tcp://10.0.0.5:5563"
    assert ep.ipc_paths() == []


def test_ipc_rule() -> None:
    ep = Endpoints("ipc:///run/gr/bus")
    assert ep.events_in == "ipc:///run/gr/bus.in"
    assert ep.queue_push("echo") == "ipc:///run/gr/bus.q.echo.push"
    assert ep.queue_pull("echo") == "ipc:///run/gr/bus.q.echo.pull"
    assert "/run/gr/bus" in ep.ipc_paths()


@pytest.mark.parametrize("bad", ["", "bus", "http://x:1", "tcp://host", "tcp://:5", "ipc://", "tcp://h:notaport"])
def test_bad_addresses_are_refused_clearly(bad: str) -> None:
    with pytest.raises(BusError, match="bad bus address"):
        Endpoints(bad)


def test_unknown_queue_is_named() -> None:
    with pytest.raises(BusError, match="unknown work queue 'nope'"):
        Endpoints("tcp://127.0.0.1:5560").queue_push("nope")


def test_env_var_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENROOM_BUS", "tcp://127.0.0.1:7000")
    assert Endpoints.from_env("ipc:///x").events_out == "tcp://127.0.0.1:7000"
