"""One address is all a part needs: the rule that derives every other socket.

``GREENROOM_BUS`` names the broker's **event output** (an XPUB socket): a plain
SUB socket in any language that connects there and subscribes to ``b""`` sees
every event. The other endpoints follow from it:

=====================  ==========================  ==============================
socket                 ``tcp://HOST:P``            ``ipc://PATH`` / ``inproc://N``
=====================  ==========================  ==============================
events out (XPUB)      ``tcp://HOST:P``            ``ipc://PATH``
events in (XSUB)       ``tcp://HOST:P+1``          ``ipc://PATH.in``
queue k, producers     ``tcp://HOST:P+2+2k``       ``ipc://PATH.q.NAME.push``
queue k, workers       ``tcp://HOST:P+3+2k``       ``ipc://PATH.q.NAME.pull``
=====================  ==========================  ==============================

``k`` is the queue's fixed slot in :data:`bus.queues.QUEUES`.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from bus.message import BusError
from bus.queues import QUEUES

ENV_VAR = "GREENROOM_BUS"
DEFAULT_TCP_PORT = 5560

_PRIVATE = itertools.count()


def private_inproc(what: str) -> str:
    """An ``inproc://`` address no other socket of this process ever had.

    A closed socket leaves libzmq's inproc registry only when the reaper gets to it, so names
    made from ``id()`` or an fd, which a new object soon gets again, can collide with it.
    """
    return f"inproc://greenroom-{what}-{os.getpid()}-{next(_PRIVATE)}"


def _check(address: str) -> str:
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not rest:
        raise BusError(f"bad bus address {address!r}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME")
    if scheme == "tcp":
        parts = urlsplit(address)
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise BusError(f"bad bus address {address!r}: tcp needs HOST:PORT")
    return address


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Every endpoint of one bus, derived from its event-output address."""

    events_out: str
    """Where subscribers connect (broker XPUB)."""

    @classmethod
    def from_env(cls, default: str) -> Endpoints:
        return cls(_check(os.environ.get(ENV_VAR) or default))

    def __post_init__(self) -> None:
        _check(self.events_out)

    @property
    def scheme(self) -> str:
        return self.events_out.partition("://")[0]

    def _port(self, offset: int) -> str:
        parts = urlsplit(self.events_out)
        port = parts.port
        assert port is not None
        host = self.events_out[len("tcp://") :].rsplit(":", 1)[0]
        return f"tcp://{host}:{port + offset}"

    @property
    def events_in(self) -> str:
        """Where publishers connect (broker XSUB)."""
        if self.scheme == "tcp":
            return self._port(1)
        return self.events_out + ".in"

    def queue_push(self, name: str) -> str:
        """Where producers of work ``name`` connect (broker PULL)."""
        slot = _slot(name)
        return self._port(2 + 2 * slot) if self.scheme == "tcp" else f"{self.events_out}.q.{name}.push"

    def queue_pull(self, name: str) -> str:
        """Where workers for ``name`` connect (broker PUSH)."""
        slot = _slot(name)
        return self._port(3 + 2 * slot) if self.scheme == "tcp" else f"{self.events_out}.q.{name}.pull"

    def ipc_paths(self) -> list[str]:
        """Filesystem paths the broker binds when the scheme is ipc (for cleanup)."""
        if self.scheme != "ipc":
            return []
        addrs = [self.events_out, self.events_in]
        for name in QUEUES:
            addrs += [self.queue_push(name), self.queue_pull(name)]
        return [a[len("ipc://") :] for a in addrs]


def _slot(name: str) -> int:
    try:
        return QUEUES[name]
    except KeyError:
        raise BusError(f"unknown work queue {name!r}; known: {', '.join(QUEUES)}") from None
