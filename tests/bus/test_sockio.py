"""A tap's reads: well-formed events whole, and malformed messages never take the next one
with them (the fast read assumes three frames and checks the layout after)."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from bus import sockio
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


# -- recv_messages: whole messages in one call (bus._frames, built; or recv_event in a loop) ---------

READERS = {"native": sockio.recv_messages, "python": sockio.recv_messages_python}
ONE = {"native": sockio.recv_message, "python": sockio.recv_frames}  # every actor's reads, one message each


def test_the_built_reader_is_the_one_in_use() -> None:
    # `make` builds bus._frames (pyproject's ext-modules); the pure-Python reads are a fallback
    # for installs without a C compiler, ~8x slower per event.
    assert sockio.recv_messages.__name__ == "recv_messages_native"
    assert sockio.recv_message.__name__ == "recv_message_native"


def read_all(pull: zmq.Socket[bytes], reader: str, n: int, limit: int = 256) -> list[list[bytes]]:
    got: list[list[bytes]] = []
    deadline = time.monotonic() + 5
    while len(got) < n and time.monotonic() < deadline:
        batch = READERS[reader](pull, limit)
        assert len(batch) <= limit + 1
        got += batch
        if not batch:
            pull.poll(100)
    return got


@pytest.mark.parametrize("reader", READERS)
def test_messages_are_read_whole_in_order_in_batches_of_at_most_the_limit(
    pair: tuple[zmq.Socket[bytes], ...], reader: str
) -> None:
    push, pull = pair
    sent = [event(i, *([b"\x00" * 640] * (i % 3))) for i in range(1000)]
    for frames in sent:
        push.send_multipart(frames)
    pull.poll(1000)
    first = READERS[reader](pull, 7)
    assert first == sent[:7]  # the limit is kept, and nothing beyond it was taken
    assert first + read_all(pull, reader, len(sent) - 7, limit=100) == sent
    assert READERS[reader](pull, 10) == []  # nothing waits: an empty list, not an exception


def test_the_built_reader_returns_malformed_messages_exactly_as_they_came(pair: tuple[zmq.Socket[bytes], ...]) -> None:
    # It reads libzmq's own end-of-message flag: no guessing from the layout, so junk is its own message.
    push, pull = pair
    sent = [event(0), [b"one frame"], [b"x|y", msgpack.packb({"a": 1})], [b""], [b"", b""], event(1), [b"a"], [b"b"]]
    for frames in sent:
        push.send_multipart(frames)
    assert read_all(pull, "native", len(sent)) == sent


@pytest.mark.parametrize("reader", READERS)
def test_a_closed_socket_is_a_clear_error_not_a_crash(pair: tuple[zmq.Socket[bytes], ...], reader: str) -> None:
    _, pull = pair
    pull.close(0)
    with pytest.raises(zmq.ZMQError) as err:
        READERS[reader](pull, 10)
    assert not isinstance(err.value, zmq.Again)


def test_without_the_built_reader_the_python_reads_are_used_and_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr("bus._frames")  # as where no C compiler built it
    monkeypatch.setitem(sys.modules, "bus._frames", None)
    with caplog.at_level(logging.WARNING, logger="greenroom.bus.sockio"):
        assert sockio._native() is None
    assert "reading messages in Python" in caplog.text


@pytest.mark.parametrize("reader", ONE)
def test_one_message_at_a_time_whole_and_again_when_none_waits(
    pair: tuple[zmq.Socket[bytes], ...], reader: str
) -> None:
    push, pull = pair
    sent = [event(0), [b"one frame"], event(1, b"\x00" * 640, b""), [b"a", b"b"]]
    for frames in sent:
        push.send_multipart(frames)
    pull.poll(1000)
    got = []
    for _ in sent:
        got.append(ONE[reader](pull))
    assert got == sent
    with pytest.raises(zmq.Again):
        ONE[reader](pull)
    pull.close(0)
    with pytest.raises(zmq.ZMQError) as err:
        ONE[reader](pull)
    assert not isinstance(err.value, zmq.Again)
