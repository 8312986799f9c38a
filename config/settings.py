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
IPC_PATH_MAX = 100  # sun_path is 108 bytes; keep room for ".q.NAME.push"


class ConfigError(ValueError):
    """A setting is missing or malformed; the text names it."""


@dataclass(frozen=True, slots=True)
class Group:
    """Actors that share one OS process."""

    name: str
    actors: tuple[str, ...]


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
    """GREENROOM_DB_SYNC_COMMIT: wait for the WAL flush (fsync) on every chat write. Off:
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
    stt_model: str | None = None
    """GREENROOM_STT_MODEL: a sherpa-onnx recognizer's model directory, or ``dashscope:MODEL``
    (Paraformer real-time, e.g. ``dashscope:paraformer-realtime-v2``); None: Whisper tiny.en."""
    dashscope_api_key: str = ""
    """DASHSCOPE_API_KEY, for DashScope voices (``cosyvoice-v2:VOICE``) and ASR (``dashscope:MODEL``)."""
    dashscope_ws_url: str | None = None
    """DASHSCOPE_WEBSOCKET_BASE_URL; None: the SDK's default (Alibaba Cloud)."""
    tts_voice: str | None = None
    """GREENROOM_TTS_VOICE: one voice for every character (e.g. ``cosyvoice-v2:longxiaochun``);
    None: each card's own ``voice``."""

    def override(self, **changes: Any) -> Settings:
        """Apply command-line flags (None means not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


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
        stt_model=env.get("GREENROOM_STT_MODEL") or doc.get("stt_model") or None,
        dashscope_api_key=env.get("DASHSCOPE_API_KEY", ""),
        dashscope_ws_url=env.get("DASHSCOPE_WEBSOCKET_BASE_URL") or doc.get("dashscope_ws_url") or None,
        tts_voice=env.get("GREENROOM_TTS_VOICE") or doc.get("tts_voice") or None,
    )


DEFAULT_GROUPS = [
    {"name": "chat", "actors": ["session", "orchestrator"]},
    {"name": "character", "actors": ["character"]},
    {"name": "voice", "actors": ["stt", "tts", "resampler"]},
    {"name": "echo", "actors": ["echo"]},
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
