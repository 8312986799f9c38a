"""Taps: watch every message live, record traffic to a file, replay it.

A tap is an ordinary subscriber: it connects to the broker's event output,
proves its subscription is live with a probe, then reports each message with
the latency since its parent (from ``mono``, valid when both ran on one host).
Undecodable traffic is shown too, with the reason.

Recording format (language-neutral): a msgpack stream; the first object is a
map ``{"greenroom_recording": 1, "bus": ..., "started": <unix s>}``, then one
array ``[received_monotonic_ns, [frame, frame, ...]]`` per message.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import IO, Any

import msgpack

from bus.codec import decode_raw
from bus.connection import Connection
from bus.endpoints import Endpoints
from bus.message import BusError, DecodeError

PARENTS_KEPT = 100_000
SUMMARY_CHARS = 100


class TapFilter:
    """Which messages to show: type prefixes (ZMQ-side) and sessions (client-side)."""

    def __init__(self, types: tuple[str, ...] = (), sessions: tuple[str, ...] = ()) -> None:
        self.types = types or ("",)
        self.sessions = frozenset(sessions)

    def wants(self, header: dict[str, Any]) -> bool:
        return not self.sessions or header.get("session") in self.sessions


class Tap:
    """Subscribes to the bus and calls ``sink`` with each message's report."""

    def __init__(self, endpoints: Endpoints, sink: Callable[[dict[str, Any]], None], flt: TapFilter) -> None:
        self._conn = Connection(endpoints, "tap")
        self._sink = sink
        self._filter = flt
        self._parents: OrderedDict[str, int] = OrderedDict()
        self._live = False
        self.count = 0

    async def start(self, timeout: float = 10.0) -> None:
        await self._conn.start(raw=self._on_frames, subscribe=self._filter.types, timeout=timeout)
        self._live = True

    async def close(self) -> None:
        await self._conn.close()

    def _on_frames(self, events: list[list[bytes]]) -> None:
        if self._live:
            for frames in events:
                self._on_event(frames)

    def _on_event(self, frames: list[bytes]) -> None:
        try:
            raw = decode_raw(frames)
        except DecodeError as exc:
            self.count += 1
            self._sink(
                {"error": str(exc), "frames": len(frames), "topic": bytes(frames[0][:80]).decode(errors="replace")}
            )
            return
        header = raw.header
        if header["src"] == self._conn.src or not self._filter.wants(header):
            return
        mono = header["mono"]
        parent = header.get("parent")
        latency = None
        if parent is not None and parent in self._parents:
            latency = (mono - self._parents[parent]) / 1e6
        self._parents[header["id"]] = mono
        if len(self._parents) > PARENTS_KEPT:
            self._parents.popitem(last=False)
        self.count += 1
        self._sink({"header": header, "body": raw.body, "extra": [len(f) for f in raw.extra], "latency_ms": latency})


# -- rendering ------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Bytes become ``{"bin": size}``: payloads are shown by size, never dumped."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bin": len(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def summarize(body: Any, limit: int = SUMMARY_CHARS) -> str:
    if not isinstance(body, dict):
        text = repr(jsonable(body))
    else:
        parts = []
        for key, value in body.items():
            if isinstance(value, bytes):
                shown = f"<{len(value)}B>"
            elif isinstance(value, float):
                shown = f"{value:.3f}"
            elif isinstance(value, str):
                shown = repr(value if len(value) <= 40 else value[:39] + "…")
            else:
                shown = json.dumps(jsonable(value), default=str)
            parts.append(f"{key}={shown}")
        text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_line(report: dict[str, Any]) -> str:
    if "error" in report:
        return f"!! undecodable ({report['frames']} frames, topic {report['topic']!r}): {report['error']}"
    h = report["header"]
    clock = time.strftime("%H:%M:%S", time.localtime(h["ts"])) + f".{int(h['ts'] * 1000) % 1000:03d}"
    latency = f"+{report['latency_ms']:.3f}ms" if report["latency_ms"] is not None else "-"
    session = h["session"] or "-"
    who = f"{h['type']:<18} {session:<14} t{h['turn']:<3} {h['src']:<22}"
    return f"{clock} {who} {latency:>11}  {summarize(report['body'])}"


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(jsonable(report), default=str, separators=(",", ":"))


# -- record / replay ------------------------------------------------------------------------


class Recorder:
    """Writes every frame it sees, with the receive time, to ``out``."""

    def __init__(self, endpoints: Endpoints, out: IO[bytes], types: tuple[str, ...] = ()) -> None:
        self._conn = Connection(endpoints, "recorder")
        self._out = out
        self._types = types or ("",)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._live = False
        self.count = 0
        out.write(self._packer.pack({"greenroom_recording": 1, "bus": endpoints.events_out, "started": time.time()}))

    async def start(self, timeout: float = 10.0) -> None:
        await self._conn.start(raw=self._on_frames, subscribe=self._types, timeout=timeout)
        self._live = True

    def _on_frames(self, events: list[list[bytes]]) -> None:
        if self._live:
            pack, write = self._packer.pack, self._out.write
            for frames in events:
                write(pack([time.monotonic_ns(), frames]))
            self.count += len(events)

    async def close(self) -> None:
        await self._conn.close()
        self._out.flush()


def read_recording(data: IO[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    unpacker = msgpack.Unpacker(data, raw=False, strict_map_key=True)
    try:
        head = next(unpacker)
    except StopIteration:
        raise BusError("empty recording") from None
    except Exception as exc:
        raise BusError(f"not a recording: {exc}") from None
    if not isinstance(head, dict) or head.get("greenroom_recording") != 1:
        raise BusError("not a Greenroom recording (bad first record)")
    for i, item in enumerate(unpacker):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], int)
            or not isinstance(item[1], list)
            or not all(isinstance(f, bytes) for f in item[1])
        ):
            raise BusError(f"recording record {i + 1} is malformed")
        yield item[0], item[1]


def unsequenced(frames: list[bytes]) -> list[bytes]:
    """The frames with the header's ``seq`` set to 0: a recording (often filtered) is not its
    senders' live sequence, and receivers must not count its gaps as drops. Anything else
    is kept as recorded; a header that does not decode is sent as it is."""
    try:
        header = msgpack.unpackb(frames[1])
    except (ValueError, msgpack.ExtraData, IndexError):
        return frames
    if not isinstance(header, dict) or not header.get("seq"):
        return frames
    header["seq"] = 0
    return [frames[0], msgpack.packb(header, use_bin_type=True), *frames[2:]]


async def replay(endpoints: Endpoints, data: IO[bytes], speed: float | None = 1.0) -> int:
    """Publish a recording again, spaced as recorded divided by ``speed`` (None: no spacing)."""
    conn = Connection(endpoints, "replay")
    await conn.start()
    sent = 0
    try:
        first: int | None = None
        start = time.monotonic()
        for stamp, frames in read_recording(data):
            if first is None:
                first = stamp
            if speed:
                due = start + (stamp - first) / 1e9 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if await conn.publish_raw(unsequenced(frames)):
                sent += 1
    finally:
        await conn.close(linger=2.0)
    return sent
