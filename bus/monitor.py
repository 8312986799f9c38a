"""Socket monitor: logs every connect, disconnect and reconnect of a bus socket.

libzmq reports socket events on an inproc PAIR per monitored socket; one daemon
thread per owner polls them all (they are rare) and logs one line per event.
Reconnect attempts are logged once per outage, not every 100 ms.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from bus.endpoints import private_inproc

log = logging.getLogger("greenroom.bus.monitor")

_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_ACCEPTED
    | zmq.EVENT_BIND_FAILED
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_MONITOR_STOPPED
)

OnEvent = Callable[[str, int], None]
"""Called (in the monitor thread) with the watched address and the zmq event."""


class SocketMonitor:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], owner: str, on_event: OnEvent | None = None):
        self._ctx = ctx
        self._owner = owner
        self._on_event = on_event
        self._watched: list[tuple[zmq.Socket[bytes], zmq.Socket[bytes], str]] = []
        self._retrying: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, sock: zmq.Socket[bytes], address: str) -> None:
        # not pyzmq's default name, made from the fd (see private_inproc)
        mon: zmq.Socket[bytes] = sock.get_monitor_socket(_EVENTS, private_inproc("monitor"))
        self._watched.append((sock, mon, address))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"monitor-{self._owner}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        for sock, mon, _ in self._watched:
            if not sock.closed:
                with contextlib.suppress(zmq.ZMQError):
                    sock.disable_monitor()
            mon.close(linger=0)
        self._watched.clear()

    def _run(self) -> None:
        poller = zmq.Poller()
        by_sock = {}
        for _, mon, address in self._watched:
            poller.register(mon, zmq.POLLIN)
            by_sock[mon] = address
        while not self._stop.is_set():
            try:
                ready = dict(poller.poll(100))
            except zmq.ZMQError:
                return
            for mon in ready:
                try:
                    event: dict[str, Any] = recv_monitor_message(mon, zmq.NOBLOCK)  # type: ignore[assignment]
                except zmq.ZMQError:
                    continue
                self._report(by_sock[mon], int(event["event"]), event.get("endpoint", b""))

    def _report(self, address: str, event: int, endpoint: bytes | str) -> None:
        name = (zmq.Event(event).name or str(event)).lower()
        peer = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
        fields = {"owner": self._owner, "socket": address, "endpoint": peer, "zmq_event": name}
        if event == zmq.EVENT_CONNECT_RETRIED:
            if address not in self._retrying:
                self._retrying.add(address)
                log.warning("bus peer unreachable, reconnecting", extra=fields)
        elif event == zmq.EVENT_CONNECTED:
            reconnect = address in self._retrying
            self._retrying.discard(address)
            log.info("bus reconnected" if reconnect else "bus connected", extra=fields)
        elif event == zmq.EVENT_DISCONNECTED:
            log.warning("bus peer disconnected", extra=fields)
        elif event == zmq.EVENT_MONITOR_STOPPED:
            return
        elif event == zmq.EVENT_ACCEPTED:
            log.debug("bus peer accepted", extra=fields)
        else:
            log.error("bus socket problem", extra=fields)
        if self._on_event is not None:
            self._on_event(address, event)
