"""Telemetry sink benchmark: bus messages per second it writes into PostgreSQL, with zero loss,
next to a raw ``COPY`` of the same rows in the same run.

Setup: embedded PostgreSQL, a broker, and the telemetry sink in its own process (``run.py
actor telemetry``), as deployed. For each rate in ``--rates``, this process publishes
small events (``diag.ping``, 100 sessions; pre-encoded, sent from a plain socket in a
thread in 10 ms slices, over ``inproc`` into the broker, so the generator costs as little as it can) at that rate for
``--seconds``, waits until the sink says every one is written or counted lost (its buffer's
``overflow``, or ``missed``: dropped by the broker), and counts them in the database. A
rate is kept up when all are stored within 0.5 s of the last one sent; the figure reported is
the highest rate kept up with every lower rate tried kept up too. Before each
round (sink or baseline) the tables are emptied and a CHECKPOINT taken, so both start alike.

Baseline, same run, same database: ``asyncpg.copy_records_to_table`` of N rows shaped
like the sink's (time, session, type, the msgpack header and body as the bus carries them,
payload size), in the sink's batch size, into a twin table, committed as the sink commits
(``synchronous_commit`` off: the default ``GREENROOM_DB_SYNC_COMMIT``, set explicitly here).

Target: >= 50,000 events/s and >= 0.5x the raw COPY rate.
Usage: python bench/telemetry.py [--rates 80000 100000 ... 160000] [--seconds 5]
Writes bench/results/telemetry.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import msgpack
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from actors.db.pg import connect, migrate, start_embedded  # noqa: E402
from actors.telemetry import BATCH, COLUMNS  # noqa: E402
from bus import Broker, Connection, Endpoints, new_id  # noqa: E402
from bus.codec import encode_parts  # noqa: E402
from bus.system import Ping  # noqa: E402
from bus.telemetry import MetricsSnapshot  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GENERATOR_IN = "inproc://bench-telemetry-generator"  # the broker takes events here too
KEPT_UP_S = 0.5  # all written within this long after the last one was sent (snapshots come every 0.1 s)


async def sink_round(endpoints: Endpoints, url: str, rate: int, seconds: float, tag: str) -> dict[str, Any]:
    """Publish ``rate`` events a second for ``seconds`` (pre-encoded, sent in 10 ms slices), then
    wait for the sink to say all are written; count them in the database."""
    snaps: list[tuple[float, MetricsSnapshot]] = []
    changed = asyncio.Event()

    def on(env: Any, queue: str | None) -> None:
        if isinstance(env.body, MetricsSnapshot):
            snaps.append((time.perf_counter(), env.body))
            changed.set()

    watch = Connection(endpoints, "bench-watch")
    await watch.start(on, subscribe=["telemetry.metrics"])
    pub = Connection(endpoints, "bench-pub")
    await pub.start(lambda env, q: None, subscribe=[])
    n = int(rate * seconds)
    frames = [encode_parts(pub.header(Ping(f"{tag}{i}"), session=f"{tag}{i % 100}"), Ping(f"{tag}{i}"))
              for i in range(n)]  # fmt: skip
    await settle(url)
    while not snaps:
        changed.clear()
        await changed.wait()
    first = snaps[-1][1].sink
    written0, overflow0, missed0 = first["written"], first["overflow"], first.get("missed", 0)
    sent = await asyncio.to_thread(blast, frames, rate)
    t0 = time.perf_counter() - sent

    def accounted() -> int:  # written, or counted as overflow or missed: nothing more will come
        sink = snaps[-1][1].sink
        return sink["written"] - written0 + sink["overflow"] - overflow0 + sink.get("missed", 0) - missed0

    while accounted() < n and time.perf_counter() - t0 < seconds + 60:
        changed.clear()
        await changed.wait()
    done = snaps[-1][0] - t0  # at most one snapshot period (0.1 s) after the last batch was written
    snap = snaps[-1][1]
    await pub.close()
    await watch.close()
    conn = await asyncpg.connect(url)
    stored = await conn.fetchval(
        "SELECT count(*) FROM telemetry_events WHERE type = 'diag.ping' AND session_id LIKE $1", f"{tag}%"
    )
    await conn.close()
    return {"rate": rate, "events": n, "publish_s": sent, "all_written_within_s": done, "stored": stored,
            "lost": n - stored, "kept_up": n == stored and done <= sent + KEPT_UP_S,
            "overflow": snap.sink["overflow"] - overflow0, "missed": snap.sink.get("missed", 0) - missed0,
            "throughput_per_s": stored / done if n == stored else 0.0}  # fmt: skip


async def settle(url: str) -> None:
    """Both sides start alike: empty tables (their indexes as small), no checkpoint owed."""
    conn = await asyncpg.connect(url)
    await conn.execute("TRUNCATE telemetry_events")
    if await conn.fetchval("SELECT to_regclass('copy_twin') IS NOT NULL"):
        await conn.execute("TRUNCATE copy_twin")
    await conn.execute("CHECKPOINT")
    await conn.close()


def blast(frames: list[list[bytes]], rate: int) -> float:
    """The load generator: the frames, as the bus carries them, from a plain socket in a thread, in
    10 ms slices at ``rate``; returns how long it took. (An awaited send per message would cost the
    generator a core at these rates, on a machine the sink, the broker and PostgreSQL share.) It
    sends to the broker over ``inproc`` (the broker runs in this process), calling pyzmq's compiled
    ``send`` directly: at 100k events/s this generator and the broker take about half a core, against
    three quarters over ``ipc`` through the Python-level ``send`` (the I/O thread's writes and
    reads of the socket file, and a Python call per frame)."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 0)  # our side never drops: loss can only be the broker's or the sink's
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(GENERATOR_IN)
    try:
        sock.recv()  # the broker's subscription: it is connected and listening
        more, last = int(zmq.NOBLOCK | zmq.SNDMORE), 0
        per_slice = max(1, rate // 100)
        send = functools.partial(zmq.backend.Socket.send, sock)
        t0 = time.perf_counter()
        for k in range(0, len(frames), per_slice):
            for topic, header, body in frames[k : k + per_slice]:
                send(topic, more)
                send(header, more)
                send(body, last)
            time.sleep(max(0.0, t0 + (k + per_slice) / rate - time.perf_counter()))
        return time.perf_counter() - t0
    finally:
        sock.close(linger=-1)


async def copy_round(url: str, n: int) -> dict[str, Any]:
    body = msgpack.packb({"text": "x" * 8, "payload": b""})
    now = time.time()
    header = {"id": "", "type": "diag.ping", "session": "", "turn": 0, "parent": None, "ts": now, "mono": 0,
              "src": "bench-pub@0", "v": 1, "seq": 1}  # fmt: skip
    rows = []
    for i in range(n):
        header["id"], header["session"] = new_id(), f"bench-{i % 100}"
        rows.append((now, header["session"], "diag.ping", msgpack.packb(header), body, 0))
    conn = await asyncpg.connect(url, server_settings={"synchronous_commit": "off"})  # as the sink's
    await conn.execute("CREATE TABLE IF NOT EXISTS copy_twin (LIKE telemetry_events INCLUDING ALL)")
    await settle(url)
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        async with conn.transaction():
            await conn.copy_records_to_table("copy_twin", records=rows[i : i + BATCH], columns=COLUMNS)
    elapsed = time.perf_counter() - t0
    await conn.execute("TRUNCATE copy_twin")
    await conn.close()
    return {"rows": n, "s": elapsed, "rows_per_s": n / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=[80_000, 100_000, 120_000, 140_000, 160_000])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="grtl-", dir="/tmp"))
    server, url = start_embedded(tmp)

    async def prepare() -> None:
        pool = await connect(url)
        await migrate(pool)
        await pool.close()

    asyncio.run(prepare())
    endpoints = Endpoints(f"ipc://{tmp}/bus")
    env = {**os.environ, "GREENROOM_BUS": endpoints.events_out, "DATABASE_URL": url, "GREENROOM_DATA_DIR": str(tmp),
           "GREENROOM_LOG_LEVEL": "warning", "GREENROOM_LOG_FORMAT": "json",
           "GREENROOM_TELEMETRY_METRICS_EVERY": "0.1", "GREENROOM_DB_SYNC_COMMIT": "0"}  # fmt: skip
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "setup": "broker in this process, telemetry sink in its own process (run.py actor telemetry), embedded "
        "PostgreSQL; publisher in this process, over inproc into the broker; raw COPY baseline from this process "
        "into a twin table; both commit with synchronous_commit off",
        "rounds": [],
    }
    with Broker(endpoints, also_events_in=[GENERATOR_IN]):
        sink = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "actor", "telemetry"], cwd=ROOT, env=env)
        try:
            for r, rate in enumerate(args.rates):  # interleaved with the raw COPY: the machine is noisy
                raw = asyncio.run(copy_round(url, int(rate * args.seconds)))
                got = asyncio.run(sink_round(endpoints, url, rate, args.seconds, f"r{r}-"))
                ratio = got["throughput_per_s"] / raw["rows_per_s"]
                report["rounds"].append({"raw_copy": raw, "sink": got, "ratio": ratio})
                print(f"{rate:,} events/s for {args.seconds:g} s: stored {got['stored']:,}/{got['events']:,}, all"
                      f" written within {got['all_written_within_s']:.1f} s (kept up: {got['kept_up']},"
                      f" {got['throughput_per_s']:,.0f}/s); raw COPY {raw['rows_per_s']:,.0f} rows/s")  # fmt: skip
        finally:
            sink.send_signal(signal.SIGTERM)
            sink.wait(timeout=30)
    server.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
    # The highest rate kept up with every lower rate kept up too: one lucky round at a high rate on this
    # noisy VM is not a sustained rate.
    sustained = 0
    for r in sorted(report["rounds"], key=lambda r: r["sink"]["rate"]):
        if not r["sink"]["kept_up"]:
            break
        sustained = r["sink"]["rate"]
    report["sustained_events_per_s"] = sustained
    lossless = [r for r in report["rounds"] if r["sink"]["lost"] == 0]
    report["best_lossless_throughput_per_s"] = max((r["sink"]["throughput_per_s"] for r in lossless), default=0.0)
    report["raw_copy_rows_per_s_median"] = sorted(r["raw_copy"]["rows_per_s"] for r in report["rounds"])[
        len(report["rounds"]) // 2
    ]
    report["ratio"] = report["sustained_events_per_s"] / report["raw_copy_rows_per_s_median"]
    report["targets"] = ">= 50,000 events/s into PostgreSQL with zero loss, and >= 0.5x raw COPY"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "telemetry.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"sustained (paced, zero loss, kept up): {report['sustained_events_per_s']:,} events/s ="
          f" {report['ratio']:.2f}x raw COPY (median {report['raw_copy_rows_per_s_median']:,.0f} rows/s)")  # fmt: skip
    print(f"written to {RESULTS / 'telemetry.json'}")


if __name__ == "__main__":
    main()
