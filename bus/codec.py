"""msgpack codec between envelopes and multipart frames.

``[topic, header, body, *extra]``: header and body are msgpack maps, bytes are
msgpack ``bin`` (never base64), large payloads may ride as extra frames. Any
msgpack + ZeroMQ client in any language can read and write this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from bus.envelope import Envelope, Header, topic_for
from bus.message import REGISTRY, DecodeError, Message, Registry

Frames = Sequence[bytes]

_HEADER_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("id", str),
    ("type", str),
    ("session", str),
    ("turn", int),
    ("parent", (str, type(None))),
    ("ts", (float, int)),
    ("mono", int),
    ("src", str),
    ("v", int),
    ("seq", int),
)


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"{what} is not valid msgpack: {exc}") from None


def encode(env: Envelope[Any], registry: Registry = REGISTRY) -> list[bytes]:
    return encode_parts(env.header, env.body, env.extra, registry)


def encode_parts(
    header: Header, body: Message, extra: Sequence[bytes] = (), registry: Registry = REGISTRY
) -> list[bytes]:
    """Encode without building an Envelope first (the send hot path)."""
    return [
        topic_for(header.type, header.session),
        msgpack.packb(header.to_wire(), use_bin_type=True),
        msgpack.packb(registry.spec_of(type(body)).to_body(body), use_bin_type=True),
        *extra,
    ]


def decode_header(frames: Frames) -> tuple[Header, dict[str, Any]]:
    """Check the frame layout and the header; return it and the raw header map."""
    if len(frames) < 3:
        raise DecodeError(f"expected at least 3 frames [topic, header, body], got {len(frames)}")
    raw = _unpack(frames[1], "header")
    try:  # fast path: one dict lookup and one exact type test per field
        id_, type_, session, turn, parent = raw["id"], raw["type"], raw["session"], raw["turn"], raw["parent"]
        ts, mono, src, v, seq = raw["ts"], raw["mono"], raw["src"], raw["v"], raw["seq"]
        ok = (
            type(id_) is str and type(type_) is str and type(session) is str and type(turn) is int
            and (parent is None or type(parent) is str) and type(ts) in (float, int) and type(mono) is int
            and type(src) is str and type(v) is int and type(seq) is int
        )  # fmt: skip
    except (KeyError, TypeError):
        ok = False
    if not ok:
        _explain_header(raw)
    header = Header(id_, type_, session, turn, parent, float(ts), mono, src, v, seq)
    expected = topic_for(type_, session)
    if frames[0] != expected:
        raise DecodeError(f"topic {bytes(frames[0])[:80]!r} does not match header (expected {expected!r})")
    return header, raw


def _explain_header(raw: Any) -> None:
    """Slow path: say exactly what is wrong with a header."""
    if not isinstance(raw, dict):
        raise DecodeError(f"header must be a map, got {type(raw).__name__}")
    for key, kind in _HEADER_TYPES:
        value = raw.get(key, _MISSING)
        if value is _MISSING:
            raise DecodeError(f"header is missing {key!r}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise DecodeError(f"header {key!r} has wrong type {type(value).__name__}")
    raise DecodeError("header is malformed")


_MISSING = object()


def decode(frames: Frames, registry: Registry = REGISTRY) -> Envelope[Any]:
    """Frames -> typed envelope. Raises DecodeError (or UnknownTypeError) with a reason."""
    header, _ = decode_header(frames)
    return decode_body(header, frames, registry)


def decode_body(header: Header, frames: Frames, registry: Registry = REGISTRY) -> Envelope[Any]:
    """The rest of :func:`decode`, for frames whose header :func:`decode_header` read."""
    spec = registry.spec(header.type)
    body = spec.from_body(_unpack(frames[2], f"{header.type} body"), header.v)
    return Envelope(header, body, tuple(bytes(f) for f in frames[3:]))


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message decoded without its type: what taps and recorders see."""

    header: dict[str, Any]
    body: Any
    extra: tuple[bytes, ...]

    @property
    def type(self) -> str:
        return str(self.header.get("type", "?"))


def decode_raw(frames: Frames) -> RawMessage:
    """Decode any well-formed message, registered type or not."""
    _, header = decode_header(frames)
    return RawMessage(header, _unpack(frames[2], "body"), tuple(bytes(f) for f in frames[3:]))
