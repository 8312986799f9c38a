"""Greenroom's one command line. ``python run.py --help`` lists the parts.

With no subcommand it starts everything: the broker and the web edge (in this
process), and each actor group from the settings in its own supervised OS
process. Every part takes the bus address (``--bus`` or ``GREENROOM_BUS``), so
the same code runs as one process, several, or across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from config import ConfigError, Settings, load_settings
from config.logging import configure

if TYPE_CHECKING:
    from actors.supervisor import ProcessSpec

ROOT = Path(__file__).resolve().parent
log = structlog.get_logger("greenroom")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings().override(
            bus=args.bus, http_host=getattr(args, "host", None), http_port=getattr(args, "port", None)
        )
    except ConfigError as exc:
        print(f"greenroom: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(args.log_format or settings.log_format, args.log_level or settings.log_level)
    command: Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]] = args.func
    from bus import BusError

    try:
        return asyncio.run(command(args, settings))
    except (BusError, ValueError, OSError) as exc:
        print(f"greenroom: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description="Greenroom: a real-time AI character platform on a ZeroMQ bus.",
        epilog="With no subcommand: start the broker and every actor group (each in its own process).",
    )  # fmt: skip
    _common(parser)
    parser.add_argument("--host", help="web edge listen address (env GREENROOM_HTTP_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="web edge port (env GREENROOM_HTTP_PORT, default 8765)")
    parser.set_defaults(func=_run_all, bus=None, log_format=None, log_level=None)
    sub = parser.add_subparsers(title="parts", metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return _common(sub.add_parser(name, help=help))

    p = add("broker", "run only the bus broker")
    p.set_defaults(func=_run_broker)

    p = add("actor", "run named actors against a bus address")
    p.add_argument("names", nargs="+", metavar="NAME", help="actor name (see actors/registry.py) or module:Class")
    p.add_argument("--name", dest="group", help="process name on the bus (default: the actor names)")
    p.set_defaults(func=_run_actors)

    p = add("edge", "run the web edge (browser WebSocket, REST, the chat page)")
    p.add_argument("--host", help="listen address (env GREENROOM_HTTP_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (env GREENROOM_HTTP_PORT, default 8765)")
    p.add_argument("--require", action="append", default=[], metavar="ACTOR",
                   help="an actor /healthz also waits for, besides the configured groups' (repeatable)")  # fmt: skip
    p.set_defaults(func=_run_edge)

    p = add("tap", "print every message on the bus, live")
    p.add_argument("filters", nargs="*", metavar="FILTER", help="message type prefix, e.g. 'chat.' or 'sys.ready'")
    p.add_argument("--session", action="append", default=[], help="only this session (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=int, default=0, help="exit after this many messages")
    p.set_defaults(func=_run_tap)

    p = add("record", "record raw bus traffic to a file")
    p.add_argument("file", type=Path)
    p.add_argument("filters", nargs="*", metavar="FILTER", help="message type prefix")
    p.set_defaults(func=_run_record)

    p = add("replay", "publish a recording again")
    p.add_argument("file", type=Path)
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=float, default=1.0, help="time factor (2 = twice as fast)")
    speed.add_argument("--fast", action="store_true", help="no spacing: as fast as possible")
    p.set_defaults(func=_run_replay)
    return parser


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Global flags, accepted before or after the subcommand.

    Each parser gets its own actions with SUPPRESS defaults, so a subcommand
    never resets a flag given before it.
    """
    parser.add_argument(
        "--bus", default=argparse.SUPPRESS, help="broker event address, e.g. tcp://10.0.0.5:5560 (env GREENROOM_BUS)"
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default=argparse.SUPPRESS,
        help="log output (env GREENROOM_LOG_FORMAT)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=argparse.SUPPRESS,
        help="env GREENROOM_LOG_LEVEL",
    )
    return parser


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _broker_beats(conn: Any, broker: Any, every: float) -> None:
    from bus.system import Heartbeat

    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        await asyncio.sleep(every)
        await conn.publish(Heartbeat("broker", os.getpid(), (), loop.time() - start, broker.stats()))


def _part(args: argparse.Namespace, settings: Settings, *words: str) -> tuple[str, ...]:
    """The command line of one supervised part, with this run's bus and logging."""
    return (
        sys.executable, str(ROOT / "run.py"), "--bus", settings.bus,
        "--log-format", args.log_format or settings.log_format,
        "--log-level", args.log_level or settings.log_level,
        *words,
    )  # fmt: skip


def _specs(args: argparse.Namespace, settings: Settings) -> list[ProcessSpec]:
    """The supervised parts: every actor group, and the embedded model's when no model is
    configured (the children see it as a configured model: OPENAI_BASE_URL points them at
    it). The edge is not among them: it runs in this process, where the settings still say
    no model is configured, so its /healthz waits for the embedded one too."""
    from actors.supervisor import ProcessSpec
    from config import Group

    groups = list(settings.groups)
    if settings.llm_base_url is None:
        groups.append(Group("llm", ("llm",)))
    return [ProcessSpec(g.name, _part(args, settings, "actor", "--name", g.name, *g.actors)) for g in groups]


def _model_env(settings: Settings) -> dict[str, str]:
    """What the parts are told of the model: the embedded one's address when it is hosted here
    (to them it is then a configured model), and so what ``emotion_tags = auto`` means for it,
    settled here where it is known."""
    env = {"GREENROOM_EMOTION_TAGS": "on" if settings.asks_emotion_tags else "off"}
    if settings.llm_base_url is None:
        env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{settings.llm_port}/v1"
    return env


async def _run_all(args: argparse.Namespace, settings: Settings) -> int:
    from actors.supervisor import Supervisor
    from bus import Broker, Connection, Endpoints
    from web.app import serve

    endpoints = Endpoints(settings.bus)
    stop = _stop_event()
    pg = None
    code = 0
    if settings.database_url is None:
        from actors.db.pg import start_embedded

        pg, url = await asyncio.to_thread(start_embedded, settings.data_dir)
        os.environ["DATABASE_URL"] = url  # the children inherit it
        log.info("embedded postgres running", url=url)
    specs = _specs(args, settings)
    os.environ.update(_model_env(settings))  # the children inherit it
    try:
        with Broker(endpoints) as broker:
            conn = Connection(endpoints, "supervisor")
            supervisor = Supervisor(specs, conn, heartbeat_timeout=settings.heartbeat_timeout)
            await conn.start(supervisor.on_message, subscribe=supervisor.topics())
            beats = asyncio.create_task(_broker_beats(conn, broker, settings.heartbeat))
            edge = asyncio.create_task(serve(settings, stop), name="edge")
            await supervisor.start()
            log.info("greenroom running", bus=settings.bus, parts=["edge", *(s.name for s in specs)],
                     url=f"http://{settings.http_host}:{settings.http_port}/")  # fmt: skip
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({edge, stopping}, return_when=asyncio.FIRST_COMPLETED)
            code = _edge_failed(edge)
            stop.set()
            log.info("greenroom stopping")
            await supervisor.stop()
            with contextlib.suppress(Exception):
                await edge  # it closes its connections when ``stop`` is set
            for task in (beats, stopping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await conn.close()
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.cleanup)
    log.info("greenroom stopped")
    return code


def _edge_failed(edge: asyncio.Task[None]) -> int:
    """1 (and the reason logged) if the edge stopped on its own: it only returns when told to."""
    if not edge.done():
        return 0
    error = edge.exception()
    log.error("the edge stopped; stopping everything", error=repr(error) if error else "returned early")
    return 1


async def _run_edge(args: argparse.Namespace, settings: Settings) -> int:
    from actors.supervisor import die_with_parent
    from web.app import serve

    die_with_parent()
    await serve(settings, _stop_event(), require=args.require)
    return 0


async def _run_broker(args: argparse.Namespace, settings: Settings) -> int:
    from bus import Broker, Connection, Endpoints

    endpoints = Endpoints(settings.bus)
    stop = _stop_event()
    with Broker(endpoints) as broker:
        conn = Connection(endpoints, "broker")
        await conn.start()
        beats = asyncio.create_task(_broker_beats(conn, broker, settings.heartbeat))
        await stop.wait()
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beats
        await conn.close()
    return 0


async def _run_actors(args: argparse.Namespace, settings: Settings) -> int:
    from actors import Host, load
    from actors.supervisor import die_with_parent
    from bus import Endpoints

    die_with_parent()
    classes = [load(name) for name in args.names]
    host = Host(Endpoints(settings.bus), classes, name=args.group, heartbeat=settings.heartbeat)
    stop = _stop_event()
    stopper = asyncio.create_task(stop.wait())
    runner = asyncio.create_task(host.run())
    await asyncio.wait([stopper, runner], return_when=asyncio.FIRST_COMPLETED)
    host.request_stop()
    await runner
    stopper.cancel()
    return 0


async def _run_tap(args: argparse.Namespace, settings: Settings) -> int:
    from bus import Endpoints
    from bus.tap import Tap, TapFilter, render_json, render_line

    stop = _stop_event()
    render = render_json if args.json else render_line

    def sink(report: dict[str, Any]) -> None:
        print(render(report), flush=True)
        if args.count and tap.count >= args.count:
            stop.set()

    tap = Tap(Endpoints(settings.bus), sink, TapFilter(tuple(args.filters), tuple(args.session)))
    await tap.start()
    print(f"tap: listening on {settings.bus}", file=sys.stderr, flush=True)
    await stop.wait()
    await tap.close()
    return 0


async def _run_record(args: argparse.Namespace, settings: Settings) -> int:
    from bus import Endpoints
    from bus.tap import Recorder

    stop = _stop_event()
    with args.file.open("wb") as out:
        recorder = Recorder(Endpoints(settings.bus), out, tuple(args.filters))
        await recorder.start()
        print(f"record: writing {args.file}", file=sys.stderr, flush=True)
        await stop.wait()
        await recorder.close()
    print(f"record: {recorder.count} messages", file=sys.stderr)
    return 0


async def _run_replay(args: argparse.Namespace, settings: Settings) -> int:
    from bus import Endpoints
    from bus.tap import replay

    if not args.fast and args.speed <= 0:
        raise ValueError("--speed must be positive")
    with args.file.open("rb") as data:
        sent = await replay(Endpoints(settings.bus), data, None if args.fast else args.speed)
    print(f"replay: {sent} messages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
