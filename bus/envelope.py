"""The envelope: a header that says who, when and why, around a typed body.

Wire form (see ``bus/codec.py``) is ``[topic, header, body, *extra]`` where the
topic is ``b"<type>|<session>"`` so that ZeroMQ prefix subscription selects
by message type (``b"chat."`` a family, ``b"chat.delta|"`` one type).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from typing import Any, Generic, TypeVar

from bus.message import Message

B = TypeVar("B", bound=Message)

TOPIC_SEP = "|"

_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


def new_id() -> str:
    """A process-unique prefix plus a counter: unique across machines, cheap to make."""
    return f"{_PREFIX}{next(_COUNTER):x}"


def topic_for(type_: str, session: str) -> bytes:
    return f"{type_}{TOPIC_SEP}{session}".encode()


def type_prefix(type_: str) -> str:
    """Subscription prefix that matches exactly one message type."""
    return type_ + TOPIC_SEP


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    """Every message carries one. Field names are the wire keys."""

    id: str
    """Unique id of this message."""
    type: str
    """Wire name of the body's type."""
    session: str
    """Session it belongs to; empty for system-wide messages."""
    turn: int
    """Turn number within the session; bumped by each user utterance or interrupt."""
    parent: str | None
    """Id of the message that caused this one (causality), or None."""
    ts: float
    """Wall clock at send, seconds since the epoch."""
    mono: int
    """Monotonic clock at send, nanoseconds: per-hop latency on one host."""
    src: str
    """Sending part, ``name@instance``."""
    v: int
    """Schema version of the body."""
    seq: int
    """Per (src, type) sequence number from 1: receivers count gaps as drops.

    0 marks a work item (pushed to a queue); the broker also publishes a copy of each
    work item as an event so taps see it, and actor hosts do not handle those copies."""

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "session": self.session,
            "turn": self.turn,
            "parent": self.parent,
            "ts": self.ts,
            "mono": self.mono,
            "src": self.src,
            "v": self.v,
            "seq": self.seq,
        }


def make_header(
    type_: str,
    *,
    session: str,
    turn: int,
    parent: str | None,
    src: str,
    v: int,
    seq: int,
) -> Header:
    return Header(new_id(), type_, session, turn, parent, time.time(), time.monotonic_ns(), src, v, seq)


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope(Generic[B]):
    """A decoded message: header, typed body and any extra binary frames."""

    header: Header
    body: B
    extra: tuple[bytes, ...] = ()

    @property
    def id(self) -> str:
        return self.header.id

    @property
    def session(self) -> str:
        return self.header.session

    @property
    def turn(self) -> int:
        return self.header.turn

    @property
    def type(self) -> str:
        return self.header.type
