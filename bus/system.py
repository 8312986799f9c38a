"""System messages every part of Greenroom understands.

Control messages (``control=True``) overtake queued data in every actor.
"""

from __future__ import annotations

from typing import Any

from bus.message import Message, message


@message("sys.heartbeat")
class Heartbeat(Message):
    """A running process says it is alive, and how it is doing."""

    name: str
    """Process (actor group) name."""
    pid: int
    """OS process id."""
    actors: tuple[str, ...] = ()
    """Actors hosted by this process."""
    uptime: float = 0.0
    """Seconds since the process started."""
    stats: dict[str, int] | None = None
    """Counters: handled, failed, decode errors, drops by cause, lane depth."""


@message("sys.ready")
class Ready(Message):
    """A process has its subscriptions live and every actor started."""

    name: str
    """Process (actor group) name."""
    pid: int
    """OS process id."""
    actors: tuple[str, ...] = ()
    """Actors now ready."""


@message("sys.stopped")
class Stopped(Message):
    """A process is going away cleanly."""

    name: str
    """Process (actor group) name."""
    pid: int
    """OS process id."""
    reason: str = ""
    """Why it stopped."""


@message("sys.probe")
class Probe(Message):
    """Sent to oneself through the broker to prove a subscription is live."""

    nonce: str
    """Random token that identifies the sender's probe."""


@message("sys.interrupt", control=True)
class Interrupt(Message):
    """The session's turn moved on: drop work and output of older turns now.

    The header's ``session`` and ``turn`` say which session and its new turn.
    """

    reason: str = ""
    """Why (user barge-in, new user text, explicit interrupt)."""


@message("sys.cancel", control=True)
class Cancel(Message):
    """Cancel one unit of work (a task, a request) by its id."""

    target: str
    """Id of the work to cancel."""
    reason: str = ""
    """Why."""


@message("sys.shutdown", control=True)
class Shutdown(Message):
    """Ask processes to stop cleanly."""

    target: str = ""
    """Process or actor name; empty means everyone."""
    reason: str = ""
    """Why."""


@message("sys.error")
class Error(Message):
    """Something went wrong that someone watching should know about."""

    code: str
    """Stable machine-readable code, e.g. ``decode_error``, ``handler_failed``."""
    message: str
    """Human-readable explanation."""
    ref: str | None = None
    """Id of the message involved, when there is one."""
    detail: dict[str, Any] | None = None
    """Extra structured context."""


@message("sys.process")
class ProcessEvent(Message):
    """The supervisor started, lost or restarted a process."""

    name: str
    """Process (actor group) name."""
    event: str
    """``started``, ``exited``, ``restarting``, ``hung``, ``stopped``."""
    pid: int = 0
    """OS process id, when known."""
    code: int | None = None
    """Exit code or negative signal number, for ``exited``."""
    restarts: int = 0
    """Restarts so far."""
    delay: float = 0.0
    """Backoff before the next start, for ``restarting``."""


@message("diag.ping")
class Ping(Message):
    """Ask the echo actor (or anyone) to answer with a Pong."""

    text: str = ""
    """Echoed back."""
    payload: bytes = b""
    """Echoed back; travels as msgpack bin."""


@message("diag.pong")
class Pong(Message):
    """The answer to a Ping; its header's parent is the Ping's id."""

    text: str = ""
    """The ping's text."""
    payload: bytes = b""
    """The ping's payload."""
    by: str = ""
    """Who answered."""
