"""Settings: read once, from environment variables over one TOML file, into frozen dataclasses.

Precedence: command-line flags (applied by run.py) > environment > TOML file > defaults.
The TOML file is ``$GREENROOM_CONFIG`` or ``config/greenroom.toml``.
"""

from __future__ import annotations

import functools
import os
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "config" / "greenroom.toml"
EMOTION_TAGS = ("auto", "on", "off")
TTS_ENGINES = ("onnxruntime", "sherpa-onnx")
VAD_ENGINES = ("onnxruntime", "sherpa-onnx")
IPC_PATH_MAX = 100  # sun_path is 108 bytes; keep room for ".q.NAME.push"


class ConfigError(ValueError):
    """A setting is missing or malformed; the text names it."""


@dataclass(frozen=True, slots=True)
class Group:
    """Actors that share one OS process."""

    name: str
    actors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class McpServer:
    """An MCP server whose tools the task executor may use (``[[mcp_servers]]``)."""

    name: str
    """Prefix of its tools' names (``files.read_text_file``)."""
    command: str = ""
    """stdio: the program to start (``{root}`` and ``{data_dir}`` are filled in)."""
    args: tuple[str, ...] = ()
    """stdio: its arguments."""
    url: str = ""
    """Streamable HTTP: the server's endpoint, instead of a command."""
    tools: tuple[str, ...] = ()
    """Tools the executor may call; empty: those the server marks read-only."""


@dataclass(frozen=True, slots=True)
class Settings:
    bus: str
    """Broker event output; every other endpoint derives from it (GREENROOM_BUS)."""
    data_dir: Path
    """Runtime data: sockets, database (GREENROOM_DATA_DIR)."""
    log_format: str
    """auto | json | console (GREENROOM_LOG_FORMAT)."""
    log_level: str
    """debug | info | warning | error (GREENROOM_LOG_LEVEL)."""
    heartbeat: float
    """Seconds between heartbeats."""
    heartbeat_timeout: float
    """A ready process silent this long is killed and restarted."""
    groups: tuple[Group, ...]
    """Actor groups started by ``run.py`` with no subcommand."""
    http_host: str = "127.0.0.1"
    """Web edge address (GREENROOM_HTTP_HOST, --host)."""
    http_port: int = 8765
    """Web edge port (GREENROOM_HTTP_PORT, --port)."""
    database_url: str | None = None
    """PostgreSQL (DATABASE_URL); None: the embedded server under data_dir/pg."""
    db_sync_commit: bool = False
    """GREENROOM_DB_SYNC_COMMIT: wait for the WAL flush (fsync) on every chat write (and
    every telemetry batch). Off:
    a write is committed and visible to every reader before anything acts on it and
    survives any crash of a Greenroom process; only a crash of PostgreSQL itself or of
    the OS within ~0.6 s can lose it. On costs ~1 ms a turn here, ~8 ms at p99."""
    llm_base_url: str | None = None
    """OpenAI-compatible endpoint (OPENAI_BASE_URL); None: the embedded SmolLM2 server."""
    llm_api_key: str = "none"
    """OPENAI_API_KEY."""
    llm_model: str = "smollm2"
    """GREENROOM_LLM_MODEL; a card may override it."""
    llm_timeout: float = 30.0
    """Seconds before a model request counts as timed out (GREENROOM_LLM_TIMEOUT)."""
    llm_port: int = 8766
    """Loopback port of the embedded model server (GREENROOM_LLM_PORT)."""
    emotion_tags: str = "auto"
    """GREENROOM_EMOTION_TAGS: ``on`` asks the model to open each reply with its emotion in
    brackets; ``off`` leaves that out of the prompt (the emotion is then read from the reply's
    words); ``auto``: on for a configured model, off for the embedded SmolLM2, which never
    writes the tag (0 of 72 replies) and answers its first words ~20 ms sooner (the first
    five ~40 ms) with the ~25 tokens shorter prompt. ``run.py`` settles ``auto`` for its
    parts, which see the embedded model as configured."""
    stt_model: str | None = None
    """GREENROOM_STT_MODEL: a sherpa-onnx recognizer's model directory, or ``dashscope:MODEL``
    (Paraformer real-time, e.g. ``dashscope:paraformer-realtime-v2``); None: Whisper tiny.en."""
    dashscope_api_key: str = ""
    """DASHSCOPE_API_KEY, for DashScope voices (``cosyvoice-v2:VOICE``) and ASR (``dashscope:MODEL``)."""
    dashscope_ws_url: str | None = None
    """DASHSCOPE_WEBSOCKET_BASE_URL; None: the SDK's default (Alibaba Cloud)."""
    tts_engine: str = "onnxruntime"
    """GREENROOM_TTS_ENGINE: what runs the Piper voice: ``onnxruntime`` (its model as Piper
    runs it: ~25% faster here, with Piper's pauses at commas) or ``sherpa-onnx`` (sherpa-onnx's
    VITS engine)."""
    vad_engine: str = "onnxruntime"
    """GREENROOM_VAD_ENGINE: what runs silero VAD: ``onnxruntime`` (one model for every session,
    each keeping its own state) or ``sherpa-onnx`` (its ``VoiceActivityDetector``, a model
    loaded per session: ~7 MB each). Both decide alike on the same audio."""
    tts_voice: str | None = None
    """GREENROOM_TTS_VOICE: one voice for every character (e.g. ``cosyvoice-v2:longxiaochun``);
    None: each card's own ``voice``."""
    mcp_servers: tuple[McpServer, ...] = ()
    """``[[mcp_servers]]`` in the TOML file: where the executor's tools come from."""
    task_timeout: float = 120.0
    """GREENROOM_TASK_TIMEOUT: a task still unfinished after this many seconds fails."""
    tool_timeout: float = 30.0
    """TOOL_EXECUTION_TIMEOUT (seeds/002): seconds one tool call (or SQL query) may take."""
    max_tool_depth: int = 3
    """MAX_TOOL_EXECUTION_DEPTH (seeds/002): tool rounds one task may run."""
    task_retries: int = 1
    """GREENROOM_TASK_RETRIES: times a task is retried when the process working it dies."""
    sse_keepalive: float = 15.0
    """GREENROOM_SSE_KEEPALIVE: seconds between keep-alive comments on an idle SSE stream."""
    api_tokens: tuple[tuple[str, str], ...] = ()
    """GREENROOM_API_TOKENS ``token:user,…``: when set, the task API needs a token (Bearer,
    or ``?token=`` for EventSource) and each user sees only their own tasks."""
    telemetry_buffer: int = 200_000
    """GREENROOM_TELEMETRY_BUFFER: bus messages the telemetry sink holds while PostgreSQL is
    away; beyond it new ones are counted as overflow (``/metrics``) and not stored."""
    telemetry_metrics_every: float = 1.0
    """GREENROOM_TELEMETRY_METRICS_EVERY: seconds between the sink's counter snapshots."""
    analytics_url: str | None = None
    """GREENROOM_ANALYTICS_URL: how analytics queries log in; None: the database URL as the
    read-only role ``greenroom_reader``."""

    def override(self, **changes: Any) -> Settings:
        """Apply command-line flags (None means not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def asks_emotion_tags(self) -> bool:
        """Whether prompts ask the model to open each reply with an ``[emotion]`` tag."""
        return self.emotion_tags == "on" or (self.emotion_tags == "auto" and self.llm_base_url is not None)


def default_bus(data_dir: Path) -> str:
    path = data_dir.resolve() / "run" / "bus"
    if len(str(path)) > IPC_PATH_MAX:
        path = Path(tempfile.gettempdir()) / f"greenroom-{os.getuid()}" / "bus"
    return f"ipc://{path}"


@functools.cache
def settings() -> Settings:
    """This process's settings, read once."""
    return load_settings()


def load_settings(env: Mapping[str, str] | None = None, file: Path | None = None) -> Settings:
    env = os.environ if env is None else env
    path = Path(env.get("GREENROOM_CONFIG") or file or DEFAULT_FILE)
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    elif env.get("GREENROOM_CONFIG"):
        raise ConfigError(f"GREENROOM_CONFIG points to {path}, which does not exist")

    def pick(key: str, var: str, default: Any) -> Any:
        return env.get(var) or doc.get(key, default)

    data_dir = Path(pick("data_dir", "GREENROOM_DATA_DIR", ROOT / ".greenroom"))
    log_format = str(pick("log_format", "GREENROOM_LOG_FORMAT", "auto"))
    if log_format not in ("auto", "json", "console"):
        raise ConfigError(f"log_format must be auto, json or console, not {log_format!r}")
    log_level = str(pick("log_level", "GREENROOM_LOG_LEVEL", "info")).lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level must be debug, info, warning or error, not {log_level!r}")
    return Settings(
        bus=str(pick("bus", "GREENROOM_BUS", "") or default_bus(data_dir)),
        data_dir=data_dir,
        log_format=log_format,
        log_level=log_level,
        heartbeat=_positive(pick("heartbeat", "GREENROOM_HEARTBEAT", 1.0), "heartbeat"),
        heartbeat_timeout=_positive(
            pick("heartbeat_timeout", "GREENROOM_HEARTBEAT_TIMEOUT", 10.0), "heartbeat_timeout"
        ),
        groups=_groups(doc.get("groups", DEFAULT_GROUPS)),
        http_host=str(pick("http_host", "GREENROOM_HTTP_HOST", "127.0.0.1")),
        http_port=_port(pick("http_port", "GREENROOM_HTTP_PORT", 8765), "http_port"),
        database_url=env.get("DATABASE_URL") or doc.get("database_url") or None,
        db_sync_commit=_flag(pick("db_sync_commit", "GREENROOM_DB_SYNC_COMMIT", False), "db_sync_commit"),
        llm_base_url=env.get("OPENAI_BASE_URL") or doc.get("llm_base_url") or None,
        llm_api_key=env.get("OPENAI_API_KEY") or "none",
        llm_model=str(pick("llm_model", "GREENROOM_LLM_MODEL", "smollm2")),
        llm_timeout=_positive(pick("llm_timeout", "GREENROOM_LLM_TIMEOUT", 30.0), "llm_timeout"),
        llm_port=_port(pick("llm_port", "GREENROOM_LLM_PORT", 8766), "llm_port"),
        emotion_tags=_one_of(pick("emotion_tags", "GREENROOM_EMOTION_TAGS", "auto"), "emotion_tags", EMOTION_TAGS),
        stt_model=env.get("GREENROOM_STT_MODEL") or doc.get("stt_model") or None,
        dashscope_api_key=env.get("DASHSCOPE_API_KEY", ""),
        dashscope_ws_url=env.get("DASHSCOPE_WEBSOCKET_BASE_URL") or doc.get("dashscope_ws_url") or None,
        tts_engine=_one_of(pick("tts_engine", "GREENROOM_TTS_ENGINE", "onnxruntime"), "tts_engine", TTS_ENGINES),
        vad_engine=_one_of(pick("vad_engine", "GREENROOM_VAD_ENGINE", "onnxruntime"), "vad_engine", VAD_ENGINES),
        tts_voice=env.get("GREENROOM_TTS_VOICE") or doc.get("tts_voice") or None,
        mcp_servers=_mcp_servers(doc.get("mcp_servers", []), data_dir),
        task_timeout=_positive(pick("task_timeout", "GREENROOM_TASK_TIMEOUT", 120.0), "task_timeout"),
        tool_timeout=_positive(pick("tool_timeout", "TOOL_EXECUTION_TIMEOUT", 30.0), "tool_timeout"),
        max_tool_depth=int(_positive(pick("max_tool_depth", "MAX_TOOL_EXECUTION_DEPTH", 3), "max_tool_depth")),
        task_retries=_count(pick("task_retries", "GREENROOM_TASK_RETRIES", 1), "task_retries"),
        sse_keepalive=_positive(pick("sse_keepalive", "GREENROOM_SSE_KEEPALIVE", 15.0), "sse_keepalive"),
        api_tokens=_tokens(env.get("GREENROOM_API_TOKENS", "")),
        analytics_url=env.get("GREENROOM_ANALYTICS_URL") or doc.get("analytics_url") or None,
        telemetry_metrics_every=_positive(
            pick("telemetry_metrics_every", "GREENROOM_TELEMETRY_METRICS_EVERY", 1.0), "telemetry_metrics_every"
        ),
        telemetry_buffer=_count(pick("telemetry_buffer", "GREENROOM_TELEMETRY_BUFFER", 200_000), "telemetry_buffer"),
    )


def _one_of(value: Any, name: str, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return text


def _count(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must not be negative, not {number}")
    return number


def _tokens(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        token, sep, user = item.partition(":")
        if not sep or not token or not user:
            raise ConfigError(f"GREENROOM_API_TOKENS entries are token:user, not {item!r}")
        pairs.append((token, user))
    return tuple(pairs)


def _mcp_servers(raw: Any, data_dir: Path) -> tuple[McpServer, ...]:
    if not isinstance(raw, list):
        raise ConfigError("mcp_servers must be an array of tables [[mcp_servers]]")

    def fill(text: str) -> str:
        return text.replace("{root}", str(ROOT)).replace("{data_dir}", str(data_dir))

    servers = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].isidentifier():
            raise ConfigError(f"mcp_servers[{i}] needs a 'name' (letters, digits, _)")
        command, url = item.get("command", ""), item.get("url", "")
        if bool(command) == bool(url) or not isinstance(command, str) or not isinstance(url, str):
            raise ConfigError(f"mcp_servers[{i}] ({item['name']}) needs exactly one of 'command' or 'url'")
        args, tools = item.get("args", []), item.get("tools", [])
        for key, value in (("args", args), ("tools", tools)):
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                raise ConfigError(f"mcp_servers[{i}] ({item['name']}): {key} must be a list of strings")
        servers.append(McpServer(item["name"], fill(command), tuple(fill(a) for a in args), url, tuple(tools)))
    if len({s.name for s in servers}) != len(servers):
        raise ConfigError("mcp_servers names must be unique")
    return tuple(servers)


DEFAULT_ACTORS = [
    "session", "orchestrator", "character", "tasks", "planner", "analyzer", "executor", "telemetry", "echo",
    "stt", "tts", "resampler",
]  # fmt: skip
DEFAULT_GROUPS = [
    # Every actor shares one process: each process costs ~40-50 MB of its own, and a message
    # between actors of one process skips the broker (bench/chat.py, bench/voice.py). The
    # speech engines' work runs in threads, outside the event loop.
    {"name": "actors", "actors": DEFAULT_ACTORS},
]


def _port(value: Any, name: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a port number, not {value!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be between 1 and 65535, not {port}")
    return port


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "on", "yes"):
        return True
    if text in ("0", "false", "off", "no"):
        return False
    raise ConfigError(f"{name} must be on or off, not {value!r}")


def _positive(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{name} must be positive, not {number}")
    return number


def _groups(raw: Any) -> tuple[Group, ...]:
    if not isinstance(raw, list):
        raise ConfigError("groups must be an array of tables [[groups]]")
    groups = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"groups[{i}] needs a string 'name'")
        actors = item.get("actors")
        if not isinstance(actors, list) or not actors or not all(isinstance(a, str) for a in actors):
            raise ConfigError(f"groups[{i}] ({item['name']}) needs a non-empty list of actor names")
        groups.append(Group(item["name"], tuple(actors)))
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ConfigError(f"group names must be unique: {names}")
    return tuple(groups)
