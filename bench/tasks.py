"""Task streams benchmark: many concurrent SSE streams on one edge (seeds/004 targets).

The system runs as deployed (``run.py``: supervisor, broker, embedded PostgreSQL, task
manager + planner + analyzer, executor, edge, each its own process); the model is an
instant, protocol-faithful OpenAI server in its own process that answers each role (plan,
SQL, summary) with a fixed reply, so what is measured is Greenroom: every task really is
planned, its SQL validated and run on PostgreSQL as the read-only role, analyzed, charted,
and every event persisted before it is streamed.

Phases, for ``--streams`` S over ``--tasks`` T tasks (S/T streams watch each task):
- baseline: a bare aiohttp SSE endpoint in its own process (no bus, no database) that
  sends one event at once: S streams opened at ``--rate`` a second and held open, time to
  first event. The machine's floor for the same client.
- live:     T tasks submitted at once (each then kept running ~10 s: the model's summary
  streams slowly); a second later S streams opened at ``--rate`` a second and held
  until their task's ``end``: time to first event (seeds/004 target < 100 ms) while up
  to S streams are open and T tasks run, edge memory (RSS) with all S open, every
  event delivered. ``live_paced_after_burst``: the same, but the streams start
  connecting while the burst of T submissions is still being planned.
- storm:    S streams opened at the same instant, baseline and Greenroom (reconnecting to
  the finished tasks with ``Last-Event-ID: 3``, so each replays the rest of its log):
  time to first event, and events/s delivered.

Usage: python bench/tasks.py [--streams 1000] [--tasks 100] [--rate 200]
Writes bench/results/tasks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import free_port, pct, wait_healthy  # noqa: E402

RESULTS = ROOT / "bench" / "results"
REPLIES = {
    "You are the planner": '{"workflow": "analytics", "steps": []}',
    "You write one PostgreSQL SELECT": "```sql\nSELECT to_char(date_trunc('month', ordered_at), 'YYYY-MM') AS month,"
    " sum(revenue) AS revenue FROM orders GROUP BY 1 ORDER BY 1\n```",
    # ~10 s per task (20 words, 0.5 s apart): streams stay open while the others connect
    "Answer the question from the query result": {
        "text": "Revenue grew every month, from a slow start two years ago to the best month yet just last month.",
        "delay": 0.5,
    },
}
CONFIG = """
[[groups]]
name = "tasks"
actors = ["tasks", "planner", "analyzer"]

[[groups]]
name = "executor"
actors = ["executor"]
"""
BASELINE = """
import asyncio, sys
from aiohttp import web
async def stream(request):
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    await resp.write(b'id: 1\\ndata: {"step": "classify_intent", "status": "running", "progress": 0}\\n\\n')
    await asyncio.sleep(3600)
    return resp
app = web.Application()
app.router.add_get("/api/stream/{id}", stream)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99),
            "max": max(values) if values else float("nan")}  # fmt: skip


async def read_stream(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], first_only: bool = False
) -> tuple[float, float, int]:
    """(seconds to the first event, seconds to the end, events) of one stream."""
    t0 = time.perf_counter()
    first = end = float("nan")
    events = 0
    async with http.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {await resp.text()}")
        async for line in resp.content:
            if line.startswith(b"data: "):
                events += 1
                if events == 1:
                    first = time.perf_counter() - t0
                    if first_only:
                        break
            elif line.startswith(b"event: end"):
                end = time.perf_counter() - t0
    return first, end, events


async def storm(
    url: str, paths: list[str], headers: dict[str, str], *, first_only: bool = False, rate: float = 0.0,
    hold: asyncio.Event | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Open a stream per path (all at once, or ``rate`` a second) and read each to its end
    (or, with ``first_only``, to its first event, then hold it open until ``hold`` is set)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
        t0 = time.perf_counter()

        async def one(i: int, path: str) -> tuple[float, float, int]:
            if rate:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            if hold is None:
                return await read_stream(http, url + path, headers, first_only)
            t1 = time.perf_counter()
            async with http.get(url + path, headers=headers) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        first = time.perf_counter() - t1
                        break
                await hold.wait()
            return first, float("nan"), 1

        results = await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
        wall = time.perf_counter() - t0
    firsts = [r[0] * 1000 for r in results]
    ends = [r[1] * 1000 for r in results if r[1] == r[1]]
    events = sum(r[2] for r in results)
    return {"streams": len(paths), "first_event_ms": summary(firsts), "end_ms": summary(ends) if ends else None,
            "events": events, "events_per_s": events / wall, "wall_s": wall}  # fmt: skip


async def submit_all(url: str, n: int) -> list[str]:
    async with aiohttp.ClientSession() as http:
        sem = asyncio.Semaphore(20)

        async def one(i: int) -> str:
            async with sem, http.post(f"{url}/api/query", json={"query": f"What was revenue by month? #{i}"}) as r:
                body = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"submit failed: {r.status} {body}")
                return str(body["workflow_id"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def edge_rss_mb(root_pid: int) -> float:
    """RSS of the edge process among ``root_pid``'s children."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid")))
        if ppid == root_pid and " edge" in cmd:
            return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024
    return float("nan")


async def run(url: str, system_pid: int, baseline_url: str, args: argparse.Namespace) -> dict[str, Any]:
    streams, n_tasks, rate = args.streams, args.tasks, args.rate
    per_task = max(1, streams // n_tasks)
    report: dict[str, Any] = {"streams": streams, "tasks": n_tasks, "streams_per_task": per_task, "rate": rate}
    base_paths = [f"/api/stream/{i}" for i in range(streams)]
    hold = asyncio.Event()
    held = asyncio.create_task(storm(baseline_url, base_paths, {}, first_only=True, rate=rate, hold=hold))
    await asyncio.sleep(streams / rate + 1.0)
    hold.set()
    report["baseline_paced"] = await held
    report["edge_rss_mb_idle"] = edge_rss_mb(system_pid)
    for phase, settle in (("live_paced_after_burst", 0.0), ("live_paced", 1.0)):
        t0 = time.perf_counter()
        ids = await submit_all(url, n_tasks)
        report[f"{phase}_submit_s"] = time.perf_counter() - t0
        await asyncio.sleep(settle)  # 0: streams connect while the submission burst is still being planned
        paths = [f"/api/stream/{t}" for t in ids for _ in range(per_task)]
        live_task = asyncio.create_task(storm(url, paths, {}, rate=rate))
        await asyncio.sleep(streams / rate + 0.5)
        report["edge_rss_mb_streams_open"] = edge_rss_mb(system_pid)
        report[phase] = await live_task
    report["baseline_storm"] = await storm(baseline_url, base_paths, {}, first_only=True)
    report["replay_storm"] = await storm(url, paths, {"Last-Event-ID": "3"})
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="streams opened a second (paced phases)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="grt-", dir="/tmp"))
    (tmp / "bench.toml").write_text(CONFIG)
    http_port, llm_port, base_port = free_port(), free_port(), free_port()
    env = {**os.environ, "GREENROOM_DATA_DIR": str(tmp), "GREENROOM_HTTP_PORT": str(http_port),
           "GREENROOM_CONFIG": str(tmp / "bench.toml"), "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
           "GREENROOM_LOG_LEVEL": "warning", "GREENROOM_LOG_FORMAT": "json"}  # fmt: skip
    env.pop("DATABASE_URL", None)
    llm = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(llm_port), "--replies", json.dumps(REPLIES)],
        cwd=ROOT, stdout=subprocess.PIPE,
    )  # fmt: skip
    baseline = subprocess.Popen([sys.executable, "-c", BASELINE, str(base_port)], cwd=ROOT)
    system = subprocess.Popen([sys.executable, str(ROOT / "run.py")], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http_port}"
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "setup": "run.py (tasks, executor, edge, embedded PostgreSQL) + instant fake OpenAI server; clients in "
        "this process; baseline: bare aiohttp SSE server in its own process",
    }
    try:
        assert llm.stdout is not None and llm.stdout.readline().strip() == b"READY"
        asyncio.run(wait_healthy(url))
        report.update(asyncio.run(run(url, system.pid, f"http://127.0.0.1:{base_port}", args)))
    finally:
        for proc in (system, llm, baseline):
            proc.send_signal(signal.SIGTERM)
        system.wait(timeout=60)
    report["targets"] = "time to first event < 100 ms (seeds/004) with 1000 concurrent streams"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tasks.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.streams} streams over {args.tasks} tasks, opened {args.rate:.0f}/s or all at once (storm)")
    for name in ("baseline_paced", "live_paced", "live_paced_after_burst", "baseline_storm", "replay_storm"):
        phase = report[name]
        first = phase["first_event_ms"]
        print(f"first event, {name}: p50 {first['p50']:.1f} ms, p99 {first['p99']:.1f} ms;"
              f" {phase['events']} events, {phase['events_per_s']:.0f} events/s")  # fmt: skip
    print(f"edge RSS: {report['edge_rss_mb_idle']:.0f} MB idle, {report['edge_rss_mb_streams_open']:.0f} MB with"
          f" {args.streams} streams open")  # fmt: skip
    print(f"written to {RESULTS / 'tasks.json'}")


if __name__ == "__main__":
    main()
