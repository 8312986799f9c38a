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
NB = int(zmq.NOBLOCK)
_NB_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """send_multipart(NOBLOCK) without the enum overhead. Raises zmq.Again (atomically) when full."""
    last = len(frames) - 1
    send = sock.send
    for i, frame in enumerate(frames):
        send(frame, NB if i == last else _NB_MORE)


def recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """recv_multipart(NOBLOCK) reading RCVMORE off the frame instead of a getsockopt per part."""
    frame = sock.recv(NB, copy=False)
    parts = [frame.bytes]
    while frame.more:
        frame = sock.recv(NB, copy=False)
        parts.append(frame.bytes)
    return parts


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
