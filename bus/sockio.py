"""Low-level socket I/O for the connection: enum-free multipart send/recv, backpressure retry,
rate-limited warnings.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import zmq

log = logging.getLogger("greenroom.bus.sockio")

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


def recv_messages_python(sock: zmq.Socket[bytes], limit: int) -> list[list[bytes]]:
    """:func:`recv_messages` where ``bus._frames`` is not built: :func:`recv_frames` in a loop."""
    out: list[list[bytes]] = []
    try:
        while len(out) < limit:
            out.append(recv_frames(sock))
    except zmq.Again:
        pass
    except zmq.ZMQError:
        if not out:
            raise
    return out


class _Readers(NamedTuple):
    many: Callable[[zmq.Socket[bytes], int], list[list[bytes]]]
    one: Callable[[zmq.Socket[bytes]], list[bytes]]


def _native() -> _Readers | None:
    """``bus._frames`` bound to the libzmq pyzmq loaded, or None where it cannot be."""
    try:
        import ctypes

        from zmq.backend.cython import _zmq

        from bus import _frames  # type: ignore[attr-defined,unused-ignore]

        lib = ctypes.CDLL(_zmq.__file__)  # pyzmq's own extension: its libzmq is found through it
        names = ("zmq_msg_init", "zmq_msg_recv", "zmq_msg_data", "zmq_msg_size", "zmq_msg_more", "zmq_msg_close",
                 "zmq_errno")  # fmt: skip
        _frames.bind(*(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0 for name in names))
    except (ImportError, OSError, AttributeError, ValueError) as exc:
        log.warning("bus._frames unavailable, reading messages in Python", extra={"error": str(exc)})
        return None
    native: Callable[[int, int], tuple[list[list[bytes]], int]] = _frames.recv_messages

    def recv_messages_native(sock: zmq.Socket[bytes], limit: int) -> list[list[bytes]]:
        if sock.closed:
            raise zmq.ZMQError(errno.ENOTSOCK)
        messages, err = native(sock.underlying, limit)
        if err and err != errno.EAGAIN and not messages:
            raise zmq.ZMQError(err)
        return messages  # an error behind them comes back on the next read

    def recv_message_native(sock: zmq.Socket[bytes]) -> list[bytes]:
        if sock.closed:
            raise zmq.ZMQError(errno.ENOTSOCK)
        messages, err = native(sock.underlying, 1)
        if messages:
            return messages[0]
        raise zmq.Again() if not err or err == errno.EAGAIN else zmq.ZMQError(err)

    return _Readers(recv_messages_native, recv_message_native)


_readers = _native()
recv_messages: Callable[[zmq.Socket[bytes], int], list[list[bytes]]] = (
    _readers.many if _readers else recv_messages_python
)
"""Up to ``limit`` whole messages waiting on ``sock``, each the list of its frames; ``[]`` when
none waits. Raises ``zmq.ZMQError`` (never ``Again``) when the socket fails with nothing read.

Built (``bus._frames``), it reads message boundaries exactly, at ~0.2 us a frame; pyzmq can
only tell a frame's ``more`` flag through a Frame object or a getsockopt (~1.5 us each)."""
recv_message: Callable[[zmq.Socket[bytes]], list[bytes]] = _readers.one if _readers else recv_frames
"""One whole message's frames, as :func:`recv_frames` (``zmq.Again`` when none waits)."""


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
