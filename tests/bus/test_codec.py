"""Codec: every registered message round-trips over a real socket; bad frames get clear errors."""

from __future__ import annotations

import typing
from typing import Any, Union, get_args, get_origin

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.helpers  # noqa: F401  (registers the test message types too)
from bus import REGISTRY, DecodeError, Envelope, UnknownTypeError, decode, decode_raw, encode
from bus.envelope import make_header
from bus.message import MessageSpec
from bus.system import Ping

MSGPACK_INT = st.integers(min_value=-(2**63), max_value=2**64 - 1)
SCALARS: Any = st.none() | st.booleans() | MSGPACK_INT | st.floats(allow_nan=False) | st.text() | st.binary()
ANY = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4))


def strategy(hint: Any) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return ANY
    if origin in (Union, __import__("types").UnionType):
        return st.one_of(*(strategy(a) for a in get_args(hint)))
    if hint is type(None):
        return st.none()
    if origin is tuple:
        return st.lists(strategy(get_args(hint)[0]), max_size=5).map(tuple)
    if origin is dict:
        key, value = get_args(hint)
        return st.dictionaries(strategy(key), strategy(value), max_size=5)
    return {str: st.text(), int: MSGPACK_INT, float: st.floats(allow_nan=False), bool: st.booleans(),
            bytes: st.binary(), dict: st.dictionaries(st.text(), ANY, max_size=4)}[hint]  # fmt: skip


def body_strategy(spec: MessageSpec) -> Any:
    hints = typing.get_type_hints(spec.cls)
    return st.builds(spec.cls, **{name: strategy(hints[name]) for name in spec.names})


HEADERS = st.fixed_dictionaries(
    {"session": st.text(), "turn": st.integers(0, 2**31), "parent": st.none() | st.text(max_size=20)}
)


@pytest.fixture(scope="module")
def pair() -> Any:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.bind("inproc://codec-test")
    push = ctx.socket(zmq.PUSH)
    push.connect("inproc://codec-test")
    yield push, pull
    push.close(0)
    pull.close(0)


@pytest.mark.parametrize("spec", list(REGISTRY), ids=lambda s: s.wire)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_message_round_trips_over_a_socket(spec: MessageSpec, data: Any, pair: Any) -> None:
    body = data.draw(body_strategy(spec))
    h = data.draw(HEADERS)
    extra = tuple(data.draw(st.lists(st.binary(max_size=64), max_size=2)))
    header = make_header(spec.wire, session=h["session"], turn=h["turn"], parent=h["parent"], src="t@1", v=1, seq=1)
    env = Envelope(header, body, extra)
    push, pull = pair
    push.send_multipart(encode(env))
    back = decode(pull.recv_multipart())
    assert back == env
    assert type(back.body) is spec.cls


def test_bytes_travel_as_msgpack_bin_never_base64() -> None:
    header = make_header("diag.ping", session="s", turn=1, parent=None, src="t@1", v=1, seq=1)
    frames = encode(Envelope(header, Ping("x", b"\x00\xff" * 10)))
    body = msgpack.unpackb(frames[2], raw=True)
    assert body[b"payload"] == b"\x00\xff" * 10  # raw=True: bin stays bytes, a str would be... a str
    assert frames[0] == b"diag.ping|s"
    assert set(msgpack.unpackb(frames[1])) == {
        "id",
        "type",
        "session",
        "turn",
        "parent",
        "ts",
        "mono",
        "src",
        "v",
        "seq",
    }


def _good() -> list[bytes]:
    header = make_header("diag.ping", session="s", turn=2, parent=None, src="t@1", v=1, seq=1)
    return encode(Envelope(header, Ping("hi")))


def _with_header(**changes: Any) -> list[bytes]:
    frames = _good()
    h = msgpack.unpackb(frames[1])
    for key, value in changes.items():
        if value is KeyError:
            del h[key]
        else:
            h[key] = value
    return [frames[0], msgpack.packb(h), frames[2]]


def _with_body(body: Any) -> list[bytes]:
    frames = _good()
    return [frames[0], frames[1], msgpack.packb(body)]


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"diag.ping|s", b"x"], "expected at least 3 frames"),
        ([b"diag.ping|s", b"\xc1", b"\x80"], "header is not valid msgpack"),
        ([b"diag.ping|s", msgpack.packb([1, 2]), b"\x80"], "header must be a map"),
        (_with_header(turn=KeyError), "header is missing 'turn'"),
        (_with_header(turn="2"), "header 'turn' has wrong type str"),
        (_with_header(turn=True), "header 'turn' has wrong type bool"),
        (_with_header(parent=5), "header 'parent' has wrong type int"),
        (_with_header(session="other"), "does not match header"),
        ([*_good()[:2], b"\xc1"], "diag.ping body is not valid msgpack"),
        (_with_body([1]), "diag.ping: body must be a map"),
        (_with_body({"text": 5}), "diag.ping.text: expected str, got int"),
        (_with_body({"text": "a", "extra": 1}), "diag.ping: unknown field(s) extra"),
        (_with_body({"payload": "not bytes"}), "diag.ping.payload: expected bytes, got str"),
    ],
)
def test_malformed_frames_raise_a_clear_error(frames: list[bytes], reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(frames)
    assert reason in str(info.value)


def test_missing_required_field_is_named() -> None:
    frames = _good()
    header = make_header("test.work", session="s", turn=2, parent=None, src="t@1", v=1, seq=1)
    frames = [b"test.work|s", msgpack.packb(header.to_wire()), msgpack.packb({"text": "x"})]
    with pytest.raises(DecodeError, match=r"test.work: missing field\(s\) n"):
        decode(frames)


def test_unknown_type_is_an_error_not_an_import() -> None:
    frames = _with_header(type="os.system")
    frames[0] = b"os.system|s"
    with pytest.raises(UnknownTypeError, match=r"unknown message type 'os\.system'"):
        decode(frames)
    assert decode_raw(frames).type == "os.system"  # taps can still show it


def test_newer_sender_may_add_fields() -> None:
    frames = _with_header(v=2)
    frames[2] = msgpack.packb({"text": "hi", "added_in_v2": True})
    assert decode(frames).body == Ping("hi")


def test_registering_a_duplicate_or_bad_wire_name_fails() -> None:
    from bus.message import Registry

    reg = Registry()
    reg.add(Ping, "x.one", 1, False)
    with pytest.raises(ValueError, match="already registered"):
        reg.add(Ping, "x.one", 1, False)
    with pytest.raises(ValueError, match="bad wire name"):
        reg.add(Ping, "x|y", 1, False)
