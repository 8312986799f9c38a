"""Telemetry sink: every bus message into PostgreSQL, in batches, never blocking the bus.

It taps the bus with a connection of its own (frames, undecoded: only the header is
read; bodies are stored as the msgpack they were), keeps rows in a bounded buffer and
writes them with ``COPY`` every ``FLUSH_EVERY`` seconds or ``BATCH`` rows, ``WRITERS`` batches
at once, committed as durably as chat writes (``GREENROOM_DB_SYNC_COMMIT``). When
PostgreSQL is away the rows wait and are written when it is back; rows arriving while
the buffer is full are counted (``overflow``), reported on the bus and in ``/metrics``.
It also keeps the per-turn latency ledger and publishes the counters ``/metrics`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections import Counter, OrderedDict, defaultdict, deque
from typing import Any

import asyncpg
import msgpack

from actors.actor import Actor
from actors.db.pg import Database
from brain.ledger import Ledger
from bus import Connection, Endpoints, Envelope
from bus.system import Error
from bus.tap import jsonable
from bus.telemetry import MetricsSnapshot, SessionDetail, SessionRequest, Sessions, SessionsRequest
from config.settings import settings

FLUSH_EVERY = 0.25
BATCH = 20_000
BEHIND = 2_000  # rows waiting after a write that make the writer go on at once
WRITERS = 2  # COPYs in flight at once: PostgreSQL takes in one batch while the sink encodes the next
ACTIVE_WINDOW = 300.0
TRACE_AFTER = 2.0
KNOWN_SESSIONS = 50_000
MAX_ROUTES = 100_000  # topics (type|session) whose parsing is cached
MAX_SEQ_KEYS = 50_000  # senders whose last seq is kept, per type
TAP_HWM = 100_000  # messages the tap's socket holds before the broker drops for it
COLUMNS = ("ts", "session_id", "type", "header", "body", "extra_bytes")
LEDGER_PREFIXES = ("chat.", "voice.", "telemetry.")
NOT_STORED = frozenset({"sys.heartbeat", "sys.probe", "telemetry.metrics"})  # counted, not stored
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, TimeoutError)


def _kind(session: str) -> str:
    return "chat" if session.startswith("s-") else "task" if session.startswith("wf-") else "system"


class TelemetrySink(Actor):
    name = "telemetry"
    handles = (SessionsRequest, SessionRequest)
    interrupt_cancels = False
    accept_stale = True  # queries name a chat session, whose turn has moved on: they are not stale

    async def on_start(self) -> None:
        cfg = settings()
        self.bound = cfg.telemetry_buffer
        self._every = cfg.telemetry_metrics_every
        self._db = Database()
        self._pool = await self._db.open(cfg.database_url, cfg.data_dir, max_size=4, sync_commit=cfg.db_sync_commit)
        self.buffer: deque[tuple[Any, ...]] = deque()
        self.stats = {
            "buffered": 0,
            "written": 0,
            "overflow": 0,
            "missed": 0,
            "db_up": 1,
            "flush_failures": 0,
            "undecodable": 0,
        }
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.missed: dict[str, int] = {}  # per type: dropped by the bus on the way here
        self.processes: dict[str, dict[str, int]] = {}
        self.restarts: Counter[str] = Counter()
        self.ledger = Ledger()
        self._sessions: OrderedDict[str, list[Any]] = OrderedDict()  # session -> [kind, character, last_seen]
        self._pending: dict[str, list[Any]] = {}  # session -> [first, last, events] since the last flush
        self._routes: dict[bytes, tuple[str, str, bool, dict[bytes | str, int]]] = {}
        self._seqs: dict[str, dict[bytes | str, int]] = {}  # type -> sender -> its last seq
        self._wake = asyncio.Event()
        self._tracer: Any = None
        self._traced: set[tuple[str, int]] = set()
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from actors.otel import TurnTracer

            self._tracer = TurnTracer()
        self._tap = Connection(Endpoints(cfg.bus), "telemetry-tap", hwm=TAP_HWM)
        await self._tap.start(raw=self._on_events, subscribe=[""])
        self._tasks = [asyncio.create_task(self._writer(lead=i == 0)) for i in range(WRITERS)]
        self._tasks.append(asyncio.create_task(self._publisher()))

    async def on_stop(self) -> None:
        await self._tap.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(*_DB_ERRORS):
            await asyncio.wait_for(self._flush_all(), 5.0)  # what is buffered, if the database is there
        await self._pool.close()
        if self._tracer is not None:
            await asyncio.to_thread(self._tracer.close)

    # -- the firehose -----------------------------------------------------------------------

    def _on_events(self, events: list[list[bytes]]) -> None:  # noqa: PLR0915 (inlined: calls would double its cost)
        """The hot path, for every event read in one go: the topic says type and session (read
        once per topic, then cached); the sender's ``seq`` is read off the end of the header; the
        header is decoded only for the messages the ledger and the counters need, and stored as
        it came."""
        routes, counts, pending, buffer, bound = self._routes, self.counts, self._pending, self.buffer, self.bound
        now = time.time
        for frames in events:
            if len(frames) < 3:
                self.stats["undecodable"] += 1
                continue
            route = routes.get(frames[0])
            if route is None:
                route = self._route(frames[0])
                if route is None:
                    continue
            kind, session, inspect, seqs = route
            counts[kind] += 1
            header = frames[1]
            # Messages the bus dropped on their way here (the broker drops for a subscriber that falls
            # behind) show as a gap in their sender's per-type seq, counted as missed. src and seq are
            # read from the end of the header as our encoder writes it (…src, v, seq); a header laid
            # out otherwise is decoded whole.
            n = len(header)
            k = -1
            if n >= 16:
                if header[n - 5] == 0xCE and header[n - 9 : n - 5] == _SEQ:  # uint32, the usual
                    k, seq = n - 9, _U32(header, n - 4)[0]
                elif header[n - 3] == 0xCD and header[n - 7 : n - 3] == _SEQ:  # uint16
                    k, seq = n - 7, (header[n - 2] << 8) | header[n - 1]
                elif header[n - 5 : n - 1] == _SEQ:  # fixint (< 128)
                    k, seq = n - 5, header[n - 1]
                elif header[n - 2] == 0xCC and header[n - 6 : n - 2] == _SEQ:  # uint8
                    k, seq = n - 6, header[n - 1]
                elif header[n - 9] == 0xCF and header[n - 13 : n - 9] == _SEQ:  # uint64
                    k, seq = n - 13, _U64(header, n - 8)[0]
            src = header.rfind(_SRC, 0, k) if k > 0 else -1
            if src < 0:
                self._count_gap_slowly(kind, header, seqs)
            else:
                sender = header[src:k]  # the sender's src and v, as encoded
                last = seqs.get(sender)
                if last is not None and seq == last + 1:
                    seqs[sender] = seq  # the usual case
                else:
                    self._seen(seqs, sender, kind, seq)
            if inspect and not self._inspect(kind, frames):
                continue
            t = now()
            if session:
                agg = pending.get(session)
                if agg is None:
                    pending[session] = [t, t, 1]
                    if session not in self._sessions:
                        self._session_info(session)
                else:
                    agg[1] = t
                    agg[2] += 1
            if len(buffer) >= bound:
                self.stats["overflow"] += 1
                continue
            buffer.append((t, session, kind, header, frames[2], sum(map(len, frames[3:])) if len(frames) > 3 else 0))
        if len(buffer) >= BATCH:
            self._wake.set()

    def _count_gap_slowly(self, kind: str, header: bytes, seqs: dict[bytes | str, int]) -> None:
        try:
            h = msgpack.unpackb(header)
            src, seq = h["src"], h["seq"]
        except (ValueError, KeyError, TypeError, msgpack.ExtraData):
            return  # not ours to judge: undecodable headers are counted where they are read
        if isinstance(seq, int):
            self._seen(seqs, str(src), kind, seq)

    def _seen(self, seqs: dict[bytes | str, int], sender: bytes | str, kind: str, seq: int) -> None:
        if not seq:
            return  # not sequenced (copies of work items)
        last = seqs.get(sender)
        if last is not None and seq > last + 1:
            self.stats["missed"] += seq - last - 1
            self.missed[kind] = self.missed.get(kind, 0) + seq - last - 1
        if last is None and len(seqs) >= MAX_SEQ_KEYS:
            seqs.clear()
        seqs[sender] = seq

    def _route(self, topic: bytes) -> tuple[str, str, bool, dict[bytes | str, int]] | None:
        kind_b, sep, session_b = topic.partition(b"|")
        if not sep:
            self.stats["undecodable"] += 1
            return None
        kind = kind_b.decode(errors="replace")
        inspect = kind in NOT_STORED or kind == "sys.process" or kind.startswith(LEDGER_PREFIXES)
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()  # sessions come and go; start again rather than grow
        seqs = self._seqs.get(kind)
        if seqs is None:
            if len(self._seqs) >= MAX_ROUTES:  # a flood of made-up types: forget, rather than grow
                self._seqs.clear()
                self._routes.clear()  # every route of a type shares its senders' seqs
            seqs = self._seqs[kind] = {}
        route = self._routes[topic] = (kind, session_b.decode(errors="replace"), inspect, seqs)
        return route

    def _inspect(self, kind: str, frames: list[bytes]) -> bool:
        """Read what the ledger and the counters need; False: count it, do not store it."""
        try:
            header = msgpack.unpackb(frames[1])
            if kind == "sys.heartbeat":
                body = msgpack.unpackb(frames[2])
                self.processes[str(body["name"])] = dict(body.get("stats") or {})
            elif kind == "sys.process":
                body = msgpack.unpackb(frames[2])
                if body.get("event") == "restarting":
                    self.restarts[str(body["name"])] += 1
            elif kind in ("chat.started", "chat.turn"):  # which character a session talks to
                b = msgpack.unpackb(frames[2])
                self._session_info(str(b.get("session") or header["session"]))[1] = str(b["character"])
        except (ValueError, KeyError, TypeError, msgpack.ExtraData):
            self.stats["undecodable"] += 1
            return False
        if kind in NOT_STORED:
            return False
        raw = frames[2]
        self.ledger.feed(kind, header, lambda: _body(raw))
        return True

    def _session_info(self, session: str) -> list[Any]:
        info = self._sessions.get(session)
        if info is None:
            info = self._sessions[session] = [_kind(session), "", time.time()]
            if len(self._sessions) > KNOWN_SESSIONS:
                self._sessions.popitem(last=False)
        return info

    # -- writing ----------------------------------------------------------------------------

    async def _writer(self, *, lead: bool) -> None:
        """One of ``WRITERS``, each on its own connection. The lead writes every ``FLUSH_EVERY``
        seconds, and alone writes the session counters and the ledgers (one writer for those
        rows: no two transactions lock them); the others join in only when rows pile up
        (``BATCH`` buffered, or ``BEHIND`` left after a write).

        At a chat's pace a write is mostly fixed cost (a transaction, three statements, ~1 ms
        of the actors' loop for a few dozen rows), and a turn that met one waited for it: with
        every writer on the clock every 0.1 s (20 writes a second) the sink took ~1 ms of CPU
        per chat turn (bench/chat.py's sequential turns, 2026-11-23). Now 4 a second: rows
        reach the table at most ~0.25 s after they crossed the bus."""
        backoff = 0.2
        while True:
            if lead:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY)
            else:
                await self._wake.wait()
            self._wake.clear()
            try:
                while self.buffer or (lead and (self._pending or self.ledger.dirty)):
                    await self._flush(lead=lead)
                    if len(self.buffer) < BEHIND:
                        break  # little is waiting: gather more for a while
                    self._wake.set()  # a backlog: every writer on it
            except _DB_ERRORS as exc:
                self.stats["flush_failures"] += 1
                if self.stats["db_up"]:
                    self.stats["db_up"] = 0
                    self.log.warning("telemetry database unavailable; buffering", error=str(exc)[:200])
                    await self.bus.publish(Error("telemetry_db_down", f"telemetry is buffering: {exc}"[:300]))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if not self.stats["db_up"]:
                self.stats["db_up"] = 1
                self.log.info("telemetry database back", buffered=len(self.buffer))
            backoff = 0.2

    async def _flush_all(self) -> None:
        while self.buffer or self._pending or self.ledger.dirty:
            await self._flush(lead=True)

    async def _flush(self, *, lead: bool) -> None:
        """Write one batch (and, for the lead, the session counters and the changed ledgers) in
        one transaction; on failure everything taken goes back to wait for the next try."""
        batch = [self.buffer.popleft() for _ in range(min(BATCH, len(self.buffer)))]
        pending: dict[str, list[Any]] = {}
        turns: list[tuple[Any, ...]] = []
        if lead:
            pending, self._pending = self._pending, {}
            turns = self.ledger.take_dirty()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if batch:
                    await conn.copy_records_to_table("telemetry_events", records=batch, columns=COLUMNS)
                if pending:
                    await self._upsert_sessions(conn, pending)
                if turns:
                    await conn.executemany(
                        "INSERT INTO telemetry_turns (session_id, turn, character, provider, source, started_at, hops,"
                        " ttft_ms, ttfa_ms, total_ms, interrupted) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
                        " ON CONFLICT (session_id, turn) DO UPDATE SET character = coalesce(EXCLUDED.character,"
                        " telemetry_turns.character), provider = coalesce(EXCLUDED.provider, telemetry_turns.provider),"
                        " hops = EXCLUDED.hops, ttft_ms = EXCLUDED.ttft_ms, ttfa_ms = EXCLUDED.ttfa_ms,"
                        " total_ms = EXCLUDED.total_ms, interrupted = EXCLUDED.interrupted",
                        turns,
                    )  # fmt: skip
        except BaseException:
            self.buffer.extendleft(reversed(batch))
            for session, agg in pending.items():
                self._merge(session, agg)
            self.ledger.mark_dirty((t[0], t[1]) for t in turns)
            raise
        self.stats["written"] += len(batch)

    def _merge(self, session: str, agg: list[Any]) -> None:
        mine = self._pending.get(session)
        if mine is None:
            self._pending[session] = agg
        else:
            mine[0], mine[1] = min(mine[0], agg[0]), max(mine[1], agg[1])
            mine[2] += agg[2]

    async def _upsert_sessions(self, conn: asyncpg.Connection, pending: dict[str, list[Any]]) -> None:
        ids = list(pending)
        info = [self._sessions.get(s) or [_kind(s), "", 0.0] for s in ids]
        await conn.execute(
            "INSERT INTO telemetry_sessions (session_id, kind, character, first_seen, last_seen, events, turns)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::int8[],"
            " $7::int4[]) ON CONFLICT (session_id) DO UPDATE SET"
            " character = coalesce(EXCLUDED.character, telemetry_sessions.character),"
            " first_seen = least(telemetry_sessions.first_seen, EXCLUDED.first_seen),"
            " last_seen = greatest(telemetry_sessions.last_seen, EXCLUDED.last_seen),"
            " events = telemetry_sessions.events + EXCLUDED.events,"
            " turns = greatest(telemetry_sessions.turns, EXCLUDED.turns)",
            ids, [i[0] for i in info], [i[1] or None for i in info], [pending[s][0] for s in ids],
            [pending[s][1] for s in ids], [pending[s][2] for s in ids], [self.ledger.last_turn.get(s, 0) for s in ids],
        )  # fmt: skip

    # -- metrics ----------------------------------------------------------------------------

    async def _publisher(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            self.stats["buffered"] = len(self.buffer)
            now = time.time()
            for session, agg in self._pending.items():
                info = self._sessions.get(session)
                if info is not None:
                    info[2] = agg[1]
            active = sum(1 for info in self._sessions.values() if info[0] == "chat" and now - info[2] < ACTIVE_WINDOW)
            histograms = {k: h.snapshot() for k, h in self.ledger.histograms.items()}
            if self._tracer is not None:
                self._export_turns(now)
            snapshot = MetricsSnapshot(dict(self.counts), dict(self.processes), dict(self.restarts), active,
                                       histograms, dict(self.stats), dict(self.missed))  # fmt: skip
            await self.bus.publish(snapshot)

    def _export_turns(self, now: float) -> None:
        """Turns whose reply ended ``TRACE_AFTER`` s ago (late hops — audio, playback — are in by then)."""
        if len(self._traced) > len(self.ledger.turns) + 1000:
            self._traced &= set(self.ledger.turns)  # forget turns the ledger forgot
        for key, turn in list(self.ledger.turns.items()):
            end = turn.hops.get("reply_end")
            if key in self._traced or end is None or now - end < TRACE_AFTER:
                continue
            self._traced.add(key)
            self._tracer.export(turn)

    # -- queries ----------------------------------------------------------------------------

    async def on_message(self, env: Envelope[Any]) -> None:
        body = env.body
        try:
            if isinstance(body, SessionsRequest):
                await self.bus.publish(await self._recent(max(1, min(body.limit, 1000))), cause=env)
            elif isinstance(body, SessionRequest):
                await self.bus.publish(await self._detail(env.session, max(1, min(body.limit, 5000))), cause=env)
        except _DB_ERRORS as exc:
            await self.bus.publish(Error("telemetry_unavailable", f"telemetry database: {exc}"[:300]), cause=env)

    async def _recent(self, limit: int) -> Sessions:
        rows = await self._pool.fetch(
            "SELECT * FROM telemetry_sessions WHERE kind <> 'system' ORDER BY last_seen DESC LIMIT $1", limit
        )
        stats = await self._pool.fetchrow(
            "WITH recent AS (SELECT * FROM telemetry_turns ORDER BY started_at DESC LIMIT 1000) SELECT"
            " count(ttft_ms) n_ttft, percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY ttft_ms) ttft,"
            " count(ttfa_ms) n_ttfa, percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY ttfa_ms) ttfa,"
            " count(total_ms) n_total, percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY total_ms) total"
            " FROM recent"
        )  # fmt: skip
        assert stats is not None  # an aggregate always has its one row
        latency = {}
        for name in ("ttft", "ttfa", "total"):
            values = stats[name] or [None, None, None]
            latency[f"{name}_ms"] = {"n": stats[f"n_{name}"], "p50": values[0], "p90": values[1], "p99": values[2]}
        return Sessions(tuple(dict(r) for r in rows), latency)

    async def _detail(self, session: str, limit: int) -> SessionDetail:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await self._read_detail(conn, session, limit)  # one snapshot: summary and rows agree

    @staticmethod
    async def _read_detail(conn: asyncpg.Connection, session: str, limit: int) -> SessionDetail:
        row = await conn.fetchrow("SELECT * FROM telemetry_sessions WHERE session_id = $1", session)
        if row is None:
            return SessionDetail(False)
        events = await conn.fetch(
            "SELECT * FROM (SELECT ts, type, header, body, extra_bytes FROM telemetry_events"
            " WHERE session_id = $1 ORDER BY ts DESC LIMIT $2) e ORDER BY ts",
            session, limit,
        )  # fmt: skip
        turns = await conn.fetch(
            "SELECT turn, character, provider, source, started_at, hops, ttft_ms, ttfa_ms, total_ms, interrupted"
            " FROM telemetry_turns WHERE session_id = $1 ORDER BY turn",
            session,
        )
        return SessionDetail(True, dict(row), tuple(_event(e) for e in events), tuple(dict(t) for t in turns))


_SEQ, _SRC = b"\xa3seq", b"\xa3src"  # the msgpack keys, as fixstr
_U32, _U64 = struct.Struct(">I").unpack_from, struct.Struct(">Q").unpack_from


def _body(raw: bytes) -> dict[str, Any]:
    try:
        body = msgpack.unpackb(raw)
    except (ValueError, msgpack.ExtraData):
        return {}
    return body if isinstance(body, dict) else {}


def _event(row: asyncpg.Record) -> dict[str, Any]:
    header = _body(row["header"])
    return {"id": header.get("id", ""), "ts": row["ts"], "sent": header.get("ts"), "turn": header.get("turn", 0),
            "type": row["type"], "src": header.get("src", ""), "parent": header.get("parent"),
            "body": _shown(row["body"]), "extra_bytes": row["extra_bytes"]}  # fmt: skip


def _shown(raw: bytes) -> Any:
    """A stored body for people: decoded, bytes by size, long text cut."""
    try:
        body = jsonable(msgpack.unpackb(raw))
    except (ValueError, msgpack.ExtraData):
        return {"undecodable": len(raw)}
    if isinstance(body, dict):
        return {k: (v[:2000] + "…" if isinstance(v, str) and len(v) > 2000 else v) for k, v in body.items()}
    return body
