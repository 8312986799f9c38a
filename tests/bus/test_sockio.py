"""Reading the bus: whole messages, in order, exactly as sent (malformed ones too, never
taking the next one with them), by the built reader (bus._frames) and the Python fallback."""

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


READERS = {"native": sockio.recv_messages, "python": sockio.recv_messages_python}
ONE = {"native": sockio.recv_message, "python": sockio.recv_frames}  # every actor's reads, one message each


def test_the_built_reader_is_the_one_in_use() -> None:
    # `make` builds bus._frames (setup.py); the pure-Python reads are a fallback
    # for installs without a C compiler, ~10x slower per event.
    assert sockio.recv_messages.__name__ == "recv_messages_native"
    assert sockio.recv_message.__name__ == "recv_message_native"


def read_all(pull: zmq.Socket[bytes], reader: str, n: int, limit: int = 256) -> list[list[bytes]]:
    got: list[list[bytes]] = []
    deadline = time.monotonic() + 5
    while len(got) < n and time.monotonic() < deadline:
        batch = READERS[reader](pull, limit)
        assert len(batch) <= limit
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


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    "junk",
    [
        [[b"one frame"]],
        [[b"x|y", msgpack.packb({"a": 1})]],  # looks like a topic and a header, but has no body
        [[msgpack.packb({"a": 1})], [msgpack.packb({"b": 2})]],  # maps alone, twice
        [[b""], [b"", b""]],
        [[b"diag.ping|s", b"not msgpack", b"body"]],  # three frames: framing is right, content is not
        [[b"a"], [b"b", b"c"]],  # malformed after malformed
    ],
)
def test_malformed_messages_come_back_exactly_as_they_came_and_take_nothing_with_them(
    pair: tuple[zmq.Socket[bytes], ...], reader: str, junk: list[list[bytes]]
) -> None:
    # Both readers go by libzmq's end-of-message flag: no guessing from the layout.
    push, pull = pair
    sent = [event(0), *junk, event(1, b"payload"), event(2)]
    for frames in sent:
        push.send_multipart(frames)
    assert read_all(pull, reader, len(sent)) == sent


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
