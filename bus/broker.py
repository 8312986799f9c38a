"""The broker: an XSUB/XPUB proxy for events and a PULL/PUSH proxy per work queue.

Each proxy is libzmq's own ``zmq_proxy_steerable`` running in a thread (C speed,
GIL released); a PAIR control socket per proxy stops it and reads its message
counters. The XSUB side subscribes to everything at start, so publishers always
send to the broker and a subscriber that joins late can never race them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import zmq

from bus.endpoints import Endpoints, private_inproc
from bus.message import BusError
from bus.monitor import SocketMonitor
from bus.queues import QUEUES

log = logging.getLogger("greenroom.bus.broker")

DEFAULT_HWM = 100_000


@dataclass(slots=True)
class _Proxy:
    name: str
    frontend: zmq.Socket[bytes]
    backend: zmq.Socket[bytes]
    control: zmq.Socket[bytes]  # our end of the PAIR
    capture: zmq.Socket[bytes] | None = None
    thread: threading.Thread | None = None


class Broker:
    """Binds every endpoint of ``endpoints`` and forwards between them."""

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        queues: Iterable[str] = QUEUES,
        hwm: int = DEFAULT_HWM,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
        also_events_in: Iterable[str] = (),
    ) -> None:
        """``also_events_in``: more addresses publishers may send events to, e.g. an
        ``inproc://`` one for a publisher in this process (same ``ctx``), which skips the
        I/O threads and the socket file."""
        self.endpoints = endpoints
        self._also_in = tuple(also_events_in)
        self._queues = tuple(queues)
        self._hwm = hwm
        self._ctx = ctx or zmq.Context.instance()
        self._proxies: list[_Proxy] = []
        self._monitor = SocketMonitor(self._ctx, "broker")
        self._started = False
        self._control = private_inproc("broker")

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            raise BusError("broker already started")
        self._prepare_ipc()
        try:
            xsub = self._bind(zmq.XSUB, self.endpoints.events_in, *self._also_in)
            xsub.send(b"\x01")  # subscribe upstream to everything
            xpub = self._bind(zmq.XPUB, self.endpoints.events_out)
            self._add("events", xsub, xpub)
            for name in self._queues:
                pull = self._bind(zmq.PULL, self.endpoints.queue_push(name))
                push = self._bind(zmq.PUSH, self.endpoints.queue_pull(name))
                # Every work item is also published as an event, so a tap sees the whole story.
                # (Frames are unchanged; seq 0 keeps subscribers from counting gaps on them.)
                capture: zmq.Socket[bytes] = self._ctx.socket(zmq.PUB)
                capture.setsockopt(zmq.LINGER, 0)
                capture.setsockopt(zmq.SNDHWM, self._hwm)
                capture.connect(self.endpoints.events_in)
                self._add(f"queue.{name}", pull, push, capture)
        except BaseException:
            self.stop()
            raise
        for proxy in self._proxies:
            proxy.thread = threading.Thread(target=self._run, args=(proxy,), name=f"broker-{proxy.name}", daemon=True)
            proxy.thread.start()
        self._monitor.start()
        self._started = True
        log.info("broker started", extra={"bus": self.endpoints.events_out, "queues": list(self._queues)})

    def stop(self) -> None:
        """Stop every proxy, close every socket and remove ipc socket files."""
        for proxy in self._proxies:
            if proxy.thread is not None and proxy.thread.is_alive():
                proxy.control.send(b"TERMINATE")
                proxy.thread.join(timeout=5)
        self._monitor.stop()
        for proxy in self._proxies:
            for sock in (proxy.frontend, proxy.backend, proxy.control, proxy.capture):
                if sock is not None:
                    sock.close(linger=0)
        self._proxies.clear()
        for path in self.endpoints.ipc_paths():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self._started:
            log.info("broker stopped", extra={"bus": self.endpoints.events_out})
        self._started = False

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- statistics -------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Frames in/out per proxy, from libzmq's own counters.

        ``events.frames_in`` vs ``events.frames_out`` counts what the broker received and forwarded;
        losses to a slow subscriber show up as ``seq`` gaps on that subscriber.
        """
        out: dict[str, int] = {}
        for proxy in self._proxies:
            if proxy.thread is None or not proxy.thread.is_alive():
                continue
            proxy.control.send(b"STATISTICS")
            frames = proxy.control.recv_multipart()
            counters = [struct.unpack("=Q", f)[0] for f in frames]
            # libzmq order: frontend msgs/bytes in/out, then backend msgs/bytes in/out (frames, not messages)
            out[f"{proxy.name}.frames_in"] = counters[0]
            out[f"{proxy.name}.frames_out"] = counters[6]
        return out

    # -- internals --------------------------------------------------------------------------

    def _bind(self, kind: int, address: str, *more: str) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.RCVHWM, self._hwm)
        for where in (address, *more):
            try:
                sock.bind(where)
            except zmq.ZMQError as exc:
                sock.close(linger=0)
                raise BusError(f"broker cannot bind {where}: {exc}") from exc
        self._monitor.watch(sock, address)
        return sock

    def _add(
        self,
        name: str,
        frontend: zmq.Socket[bytes],
        backend: zmq.Socket[bytes],
        capture: zmq.Socket[bytes] | None = None,
    ) -> None:
        addr = f"{self._control}-{name}"
        ours: zmq.Socket[bytes] = self._ctx.socket(zmq.PAIR)
        ours.bind(addr)
        self._proxies.append(_Proxy(name, frontend, backend, ours, capture))

    def _run(self, proxy: _Proxy) -> None:
        theirs: zmq.Socket[bytes] = self._ctx.socket(zmq.PAIR)
        theirs.connect(f"{self._control}-{proxy.name}")
        try:
            zmq.proxy_steerable(proxy.frontend, proxy.backend, proxy.capture, theirs)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.ETERM:
                log.error("proxy failed", extra={"proxy": proxy.name, "error": str(exc)})
        finally:
            theirs.close(linger=0)

    def _prepare_ipc(self) -> None:
        paths = self.endpoints.ipc_paths()
        if not paths:
            return
        os.makedirs(os.path.dirname(os.path.abspath(paths[0])), exist_ok=True)
        # libzmq silently replaces an existing socket file: refuse if a live broker owns it.
        if os.path.exists(paths[0]):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(paths[0])
            except OSError:
                pass  # stale file from a killed run: safe to take over
            else:
                raise BusError(f"another broker is already serving {self.endpoints.events_out}")
            finally:
                probe.close()
