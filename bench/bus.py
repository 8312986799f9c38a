"""Bus benchmark: the project's runtime next to raw pyzmq.asyncio + msgpack, same broker, same run.

1. Throughput: a producer process publishes N events as fast as it can through the
   broker to a consumer process; rate = messages / (last - first arrival) at the consumer.
   runtime = Connection.publish -> broker -> Host -> lane -> Actor.on_message (decode + dispatch).
   raw     = zmq.asyncio PUB send_multipart(msgpack) -> broker -> zmq.asyncio SUB recv + unpackb.
2. Round trip: request -> actor process -> reply, sequential, p50/p99.
   runtime = Connection.ask(Ping) -> Echo actor -> Pong.  raw = the same over bare zmq.asyncio.

Usage: python bench/bus.py [--n 200000] [--rtt 3000] [--rounds 3]
Writes bench/results/bus.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack
import zmq
import zmq.asyncio

from actors import Actor, Host
from actors.echo import Echo
from bus import Broker, Connection, Endpoints, Envelope, Message, message
from bus.envelope import make_header
from bus.system import Ping, Pong
from config.logging import configure

RESULTS = Path(__file__).resolve().parent / "results"


@message("bench.tick")
class Tick(Message):
    """One benchmark event."""

    n: int
    """Sequence number."""
    text: str = ""
    """A small payload, like a text delta."""


# -- roles (each runs in its own process) ---------------------------------------------------


class Counter(Actor):
    name = "counter"
    handles = (Tick,)
    total = 0
    first = 0.0
    last = 0.0
    seen = 0
    done: asyncio.Event

    async def on_message(self, env: Envelope[Any]) -> None:
        cls = type(self)
        if cls.seen == 0:
            cls.first = time.perf_counter()
        cls.seen += 1
        if env.body.n == cls.total - 1:
            cls.last = time.perf_counter()
            cls.done.set()


async def runtime_consumer(ep: Endpoints, n: int) -> dict[str, Any]:
    Counter.total, Counter.done = n, asyncio.Event()
    host = Host(ep, [Counter], heartbeat=60)
    await host.start()
    print("READY", flush=True)
    await asyncio.wait_for(Counter.done.wait(), 120)
    result = {"received": Counter.seen, "seconds": Counter.last - Counter.first, "missed": host.conn.stats["missed"]}
    await host.stop()
    return result


async def runtime_producer(ep: Endpoints, n: int) -> dict[str, Any]:
    conn = Connection(ep, "producer")
    await conn.start()
    t = time.perf_counter()
    for i in range(n):
        await conn.publish(Tick(i, "hello there"), session="s1", turn=1)
    sent = time.perf_counter() - t
    await conn.close(linger=10)
    return {"seconds": sent}


def raw_frames(i: int) -> list[bytes]:
    header = make_header("bench.tick", session="s1", turn=1, parent=None, src="raw@1", v=1, seq=i)
    return [b"bench.tick|s1", msgpack.packb(header.to_wire()), msgpack.packb({"n": i, "text": "hello there"})]


async def raw_consumer(ep: Endpoints, n: int) -> dict[str, Any]:
    ctx = zmq.asyncio.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.connect(ep.events_out)
    sub.subscribe(b"bench.tick|")
    await wait_subscribed(ep, sub)
    print("READY", flush=True)
    seen, first = 0, 0.0
    while True:
        frames = await sub.recv_multipart()
        if seen == 0:
            first = time.perf_counter()
        seen += 1
        msgpack.unpackb(frames[1])
        body = msgpack.unpackb(frames[2])
        if body["n"] == n - 1:
            break
    result = {"received": seen, "seconds": time.perf_counter() - first, "missed": n - seen}
    sub.close(0)
    return result


async def wait_subscribed(ep: Endpoints, sub: zmq.asyncio.Socket) -> None:
    """Raw sockets get the same liveness guarantee the runtime has: see our own probe come back."""
    pub = zmq.asyncio.Context.instance().socket(zmq.PUB)
    pub.connect(ep.events_in)
    sub.subscribe(b"bench.probe|")
    while True:
        await pub.send_multipart([b"bench.probe|", b"", b""])
        if await sub.poll(100):
            await sub.recv_multipart()
            break
    sub.unsubscribe(b"bench.probe|")
    pub.close(0)


async def raw_producer(ep: Endpoints, n: int) -> dict[str, Any]:
    ctx = zmq.asyncio.Context.instance()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.connect(ep.events_in)
    await pub.recv()  # the broker's subscription
    t = time.perf_counter()
    for i in range(n):
        await pub.send_multipart(raw_frames(i))
    sent = time.perf_counter() - t
    pub.close(linger=10_000)
    return {"seconds": sent}


async def raw_echo(ep: Endpoints) -> dict[str, Any]:
    ctx = zmq.asyncio.Context.instance()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
    sub.connect(ep.events_out)
    sub.subscribe(b"raw.ping|")
    pub.connect(ep.events_in)
    await wait_subscribed(ep, sub)
    print("READY", flush=True)
    while True:
        frames = await sub.recv_multipart()
        header = msgpack.unpackb(frames[1])
        if msgpack.unpackb(frames[2]).get("stop"):
            break
        reply = {**header, "type": "raw.pong", "parent": header["id"], "id": header["id"] + "r"}
        await pub.send_multipart([b"raw.pong|", msgpack.packb(reply), frames[2]])
    return {}


async def runtime_echo(ep: Endpoints) -> dict[str, Any]:
    host = Host(ep, [Echo], heartbeat=60)
    await host.start()
    print("READY", flush=True)
    await host.run()
    return {}


ROLES = {
    "runtime_consumer": runtime_consumer,
    "runtime_producer": runtime_producer,
    "raw_consumer": raw_consumer,
    "raw_producer": raw_producer,
}


# -- orchestration --------------------------------------------------------------------------


def start_role(role: str, bus: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--role", role, "--bus", bus, "--n", str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "GREENROOM_LOG_LEVEL": "error"},
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        raise RuntimeError(f"role did not start: {line!r}")


def result_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=300)
    return dict(json.loads(out.strip().splitlines()[-1]))


def throughput(kind: str, bus: str, n: int) -> dict[str, Any]:
    consumer = start_role(f"{kind}_consumer", bus, n)
    wait_ready(consumer)
    producer = start_role(f"{kind}_producer", bus, n)
    prod = result_of(producer)
    cons = result_of(consumer)
    return {
        "msgs_per_s": cons["received"] / cons["seconds"],
        "received": cons["received"],
        "missed": cons["missed"],
        "producer_msgs_per_s": n / prod["seconds"],
    }


async def round_trips(kind: str, ep: Endpoints, count: int) -> list[float]:
    role = "runtime_echo" if kind == "runtime" else "raw_echo"
    proc = start_role(role, ep.events_out, 0)
    wait_ready(proc)
    samples: list[float] = []
    if kind == "runtime":
        conn = Connection(ep, "rtt")
        await conn.start()
        for i in range(count + 200):
            t = time.perf_counter_ns()
            await conn.ask(Ping(str(i)), reply=Pong)
            if i >= 200:  # warm-up excluded
                samples.append((time.perf_counter_ns() - t) / 1e6)
        from bus.system import Shutdown

        await conn.publish(Shutdown("echo"))
        await conn.close()
    else:
        ctx = zmq.asyncio.Context.instance()
        sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
        sub.connect(ep.events_out)
        sub.subscribe(b"raw.pong|")
        pub.connect(ep.events_in)
        await wait_subscribed(ep, sub)
        for i in range(count + 200):
            header = make_header("raw.ping", session="", turn=0, parent=None, src="rtt@1", v=1, seq=i)
            t = time.perf_counter_ns()
            await pub.send_multipart([b"raw.ping|", msgpack.packb(header.to_wire()), msgpack.packb({"text": str(i)})])
            while True:
                frames = await sub.recv_multipart()
                if msgpack.unpackb(frames[1])["parent"] == header.id:
                    break
            if i >= 200:
                samples.append((time.perf_counter_ns() - t) / 1e6)
        await pub.send_multipart([b"raw.ping|", msgpack.packb(header.to_wire()), msgpack.packb({"stop": True})])
        sub.close(0)
        pub.close(linger=1000)
    proc.wait(timeout=30)
    return samples


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=[*ROLES, "runtime_echo", "raw_echo"])
    parser.add_argument("--bus")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--rtt", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure("json", "error")  # logs to stderr; stdout carries READY and results
    if args.role:
        ep = Endpoints(args.bus)
        if args.role == "runtime_echo":
            coro: Any = runtime_echo(ep)
        elif args.role == "raw_echo":
            coro = raw_echo(ep)
        else:
            coro = ROLES[args.role](ep, args.n)
        print(json.dumps(asyncio.run(coro)), flush=True)
        return

    tmp = tempfile.mkdtemp(prefix="grb-", dir="/tmp")
    ep = Endpoints(f"ipc://{tmp}/bus")
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "zmq": zmq.zmq_version()},
        "n": args.n,
        "rounds": args.rounds,
    }
    with Broker(ep):
        runs: dict[str, list[dict[str, Any]]] = {"raw": [], "runtime": []}
        for _ in range(args.rounds):  # interleaved, so drift on a noisy machine hits both
            for kind in ("raw", "runtime"):
                runs[kind].append(throughput(kind, ep.events_out, args.n))
        best = {k: max(r["msgs_per_s"] for r in v) for k, v in runs.items()}
        median = {k: statistics.median(r["msgs_per_s"] for r in v) for k, v in runs.items()}
        report["throughput"] = {
            "runs": runs,
            "best_msgs_per_s": best,
            "median_msgs_per_s": median,
            "ratio_median": median["runtime"] / median["raw"],
            "target_ratio": 0.7,
        }
        rtt = {kind: asyncio.run(round_trips(kind, ep, args.rtt)) for kind in ("raw", "runtime")}
        report["round_trip_ms"] = {
            kind: {"p50": pct(s, 50), "p90": pct(s, 90), "p99": pct(s, 99), "max": max(s), "n": len(s)}
            for kind, s in rtt.items()
        }
        report["round_trip_ms"]["target_p99"] = 1.0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bus.json").write_text(json.dumps(report, indent=2) + "\n")
    t = report["throughput"]
    r = report["round_trip_ms"]
    print(f"throughput (median of {args.rounds}, {args.n} msgs, producer+consumer processes through the broker)")
    print(f"  raw pyzmq.asyncio+msgpack : {median['raw']:>10,.0f} msg/s")
    ratio = t["ratio_median"]
    print(f"  greenroom runtime         : {median['runtime']:>10,.0f} msg/s   ratio {ratio:.2f} (target >= 0.70)")
    print(f"  loss: raw {[x['missed'] for x in runs['raw']]}  runtime {[x['missed'] for x in runs['runtime']]}")
    print(f"round trip request -> actor process -> reply ({args.rtt} sequential)")
    for kind in ("raw", "runtime"):
        print(f"  {kind:<8} p50 {r[kind]['p50']:.3f} ms  p90 {r[kind]['p90']:.3f} ms  p99 {r[kind]['p99']:.3f} ms")
    print(f"written to {RESULTS / 'bus.json'}")


if __name__ == "__main__":
    main()
