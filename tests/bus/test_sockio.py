"""A tap's reads: well-formed events whole, and malformed messages never take the next one
with them (the fast read assumes three frames and checks the layout after)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from bus.codec import encode_parts
from bus.envelope import make_header
from bus.sockio import recv_event
from bus.system import Ping


def event(i: int, *extra: bytes) -> list[bytes]:
    header = make_header("diag.ping", session=f"s{i}", turn=0, parent=None, src="t@1", v=1, seq=i + 1)
    return encode_parts(header, Ping(f"m{i}"), extra)


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    pull: zmq.Socket[bytes] = ctx.socket(zmq.PULL)
    address = f"inproc://sockio-{uuid.uuid4().hex}"
    pull.bind(address)
    push: zmq.Socket[bytes] = ctx.socket(zmq.PUSH)
    push.connect(address)
    yield push, pull
    push.close(0)
    pull.close(0)


def drain(pull: zmq.Socket[bytes], events: int = 0, until: list[bytes] | None = None) -> list[tuple[str, list[bytes]]]:
    """Everything read, in order: ("malformed"|"read", frames); until ``events`` reads or ``until``."""
    got: list[tuple[str, list[bytes]]] = []
    deadline = time.monotonic() + 5

    def done() -> bool:
        if until is not None:
            return any(frames == until for _, frames in got)
        return sum(1 for kind, _ in got if kind == "read") >= events

    while not done() and time.monotonic() < deadline:
        try:
            malformed, frames = recv_event(pull)
        except zmq.Again:
            pull.poll(100)  # until something arrives (or 100 ms pass)
            continue
        if malformed is not None:
            got.append(("malformed", malformed))
        got.append(("read", frames))
    return got


def test_well_formed_events_are_read_whole_with_their_extra_frames(pair: tuple[zmq.Socket[bytes], ...]) -> None:
    push, pull = pair
    sent = [event(0), event(1, b"\x00" * 640), event(2, b"a", b"", b"c")]
    for frames in sent:
        push.send_multipart(frames)
    assert drain(pull, 3) == [("read", f) for f in sent]


@pytest.mark.parametrize(
    "junk",
    [
        [[b"one frame"]],
        [[b"x|y", msgpack.packb({"a": 1})]],  # looks like a topic and a header, but has no body
        [[msgpack.packb({"a": 1})], [msgpack.packb({"b": 2})]],  # maps alone, twice
        [[b""], [b"", b""]],
        [[b"diag.ping|s", b"not msgpack", b"body"]],  # three frames: framing is right, content is not
    ],
)
def test_a_malformed_message_never_takes_the_next_event_with_it(
    pair: tuple[zmq.Socket[bytes], ...], junk: list[list[bytes]]
) -> None:
    push, pull = pair
    before, after, last = event(0), event(1, b"payload"), event(2)
    push.send_multipart(before)
    for frames in junk:
        push.send_multipart(frames)
    push.send_multipart(after)
    push.send_multipart(last)
    got = [frames for _, frames in drain(pull, until=last)]
    good = [f for f in got if f in (before, after, last)]
    assert good == [before, after, last]  # each whole, in order
    bad = [b for frames in got if frames not in good for b in frames]
    assert bad == [b for frames in junk for b in frames]  # the malformed frames, all, as they came


def test_short_messages_with_nothing_behind_them_are_read_as_they_came(pair: tuple[zmq.Socket[bytes], ...]) -> None:
    push, pull = pair
    push.send_multipart([b"lonely"])
    assert drain(pull, 1) == [("read", [b"lonely"])]
    push.send_multipart([b"two", b"frames"])
    assert drain(pull, 1) == [("read", [b"two", b"frames"])]
    push.send_multipart([b"a"])
    push.send_multipart([b"b", b"c"])  # malformed after malformed: read together, nothing lost
    assert drain(pull, 1) == [("read", [b"a", b"b", b"c"])]
