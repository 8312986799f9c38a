"""Low-level socket I/O for the connection: enum-free multipart send/recv, backpressure retry,
rate-limited warnings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import zmq

# Plain ints: pyzmq's IntFlag arithmetic in send_multipart/recv_multipart costs more than the I/O.
_NB = int(zmq.NOBLOCK)
_NB_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """send_multipart(NOBLOCK) without the enum overhead. Raises zmq.Again (atomically) when full."""
    last = len(frames) - 1
    send = sock.send
    for i, frame in enumerate(frames):
        send(frame, _NB if i == last else _NB_MORE)


def recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """recv_multipart(NOBLOCK) reading RCVMORE off the frame instead of a getsockopt per part."""
    frame = sock.recv(_NB, copy=False)
    parts = [frame.bytes]
    while frame.more:
        frame = sock.recv(_NB, copy=False)
        parts.append(frame.bytes)
    return parts


_MAPISH = bytes(1 if 0x80 <= b <= 0x8F or b in (0xDE, 0xDF) else 0 for b in range(256))
"""First bytes of a msgpack map (fixmap, map16, map32): a header or a body."""


def recv_event(sock: zmq.Socket[bytes]) -> tuple[list[bytes] | None, list[bytes]]:
    """One event's frames, for taps: ``(None, frames)``, or ``(malformed, frames)`` when a
    malformed message was read ahead of them. Raises zmq.Again when nothing waits.

    Every bus event has at least three frames (topic, header, body), so the first two are
    read as plain bytes, without the frame object whose ``more`` flag costs more than the
    read; the third tells whether extra frames follow. A malformed message of fewer frames
    makes the read run into the next message: the layout check (a topic, then two msgpack
    maps) catches it, and the frames are split where a well-formed message starts — no
    message after a malformed one is lost. ZeroMQ delivers a message's frames together,
    so a read that finds nothing more ends a message.
    """
    recv = sock.recv
    first = recv(_NB)
    try:
        second = recv(_NB)
    except zmq.Again:
        return None, [first]  # a one-frame message, and nothing behind it
    try:
        frame = recv(_NB, copy=False)
    except zmq.Again:
        return None, [first, second]
    body = frame.bytes
    frames = [first, second, body]
    while frame.more:
        frame = recv(_NB, copy=False)
        frames.append(frame.bytes)
    try:  # _laid_out(frames, 0), inline: this is every tap's hot path
        if _MAPISH[second[0]] and _MAPISH[body[0]] and not _MAPISH[first[0]] and b"|" in first:
            return None, frames
    except IndexError:  # an empty frame
        pass
    for i in range(1, len(frames) - 2):
        if _laid_out(frames, i):
            return frames[:i], frames[i:]
    return None, frames  # malformed as a whole: the handler sees it as it came


def _laid_out(frames: list[bytes], i: int) -> bool:
    """Whether ``frames[i:]`` starts like a bus event: a topic, then two msgpack maps."""
    topic, header, body = frames[i], frames[i + 1], frames[i + 2]
    if not (topic and header and body):
        return False
    return b"|" in topic and not _MAPISH[topic[0]] and bool(_MAPISH[header[0]] and _MAPISH[body[0]])


async def send_with_backoff(sock: zmq.Socket[bytes], frames: list[bytes], timeout: float) -> bool:
    """The peer is at its high-water mark: retry with short backoff until ``timeout``.

    Polling (not an awaited zmq.asyncio send) on purpose: our own NOBLOCK sends on the
    same socket can consume the edge-triggered FD wake-up such a send would wait for.
    """
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while time.monotonic() < deadline:
        await asyncio.sleep(pause)
        try:
            send_frames(sock, frames)
            return True
        except zmq.Again:
            pause = min(pause * 2, 0.02)
    return False


class RateLimitedLog:
    """At most ``limit`` lines per ``window`` seconds per key; then one summary."""

    def __init__(self, logger: logging.Logger, limit: int = 5, window: float = 10.0) -> None:
        self._log, self._limit, self._window = logger, limit, window
        self._state: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, msg: str, **fields: Any) -> None:
        now = time.monotonic()
        start, count = self._state.get(key, (now, 0))
        if now - start > self._window:
            if count > self._limit:
                self._log.warning("suppressed repeats", extra={"key": key, "count": count - self._limit})
            start, count = now, 0
        count += 1
        self._state[key] = (start, count)
        if count <= self._limit:
            self._log.warning(msg, extra=fields)
