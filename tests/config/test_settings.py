"""Settings: environment over TOML over defaults; every bad value named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.registry import ACTORS
from config import ConfigError, Group, load_settings


def test_defaults_put_the_bus_under_the_data_dir(tmp_path: Path) -> None:
    s = load_settings({"GREENROOM_DATA_DIR": str(tmp_path)}, file=tmp_path / "none.toml")
    assert s.bus.startswith("ipc://") and s.bus.endswith("/run/bus")
    assert [g.name for g in s.groups] == ["actors"]  # every actor in one process
    hosted = [a for g in s.groups for a in g.actors]
    assert sorted(hosted) == sorted(set(ACTORS) - {"llm"}), "every actor once (the model server is added apart)"
    assert s.database_url is None and s.llm_base_url is None  # embedded defaults


def test_long_data_dir_falls_back_to_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    s = load_settings({"GREENROOM_DATA_DIR": str(deep)}, file=tmp_path / "none.toml")
    assert len(s.bus) < 110


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    f = tmp_path / "g.toml"
    f.write_text('bus = "tcp://127.0.0.1:7000"\nheartbeat = 2\n[[groups]]\nname = "a"\nactors = ["echo"]\n')
    s = load_settings({"GREENROOM_CONFIG": str(f), "GREENROOM_HEARTBEAT": "0.5"})
    assert s.bus == "tcp://127.0.0.1:7000" and s.heartbeat == 0.5 and s.groups == (Group("a", ("echo",)),)
    assert not s.db_sync_commit
    assert load_settings({"GREENROOM_CONFIG": str(f), "GREENROOM_DB_SYNC_COMMIT": "on"}).db_sync_commit


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("heartbeat = -1", "heartbeat must be positive"),
        ('heartbeat = "soon"', "heartbeat must be a number"),
        ('log_format = "xml"', "log_format must be auto, json or console"),
        ("groups = 3", "groups must be an array"),
        ('[[groups]]\nname = "a"\nactors = []', "needs a non-empty list"),
        ('[[groups]]\nname = "a"\nactors = ["echo"]\n[[groups]]\nname = "a"\nactors = ["echo"]', "unique"),
        ("this is not toml", "g.toml"),
        ('db_sync_commit = "maybe"', "db_sync_commit must be on or off"),
        ('emotion_tags = "sometimes"', "emotion_tags must be one of auto, on, off, not 'sometimes'"),
        ('tts_engine = "espeak"', "tts_engine must be one of onnxruntime, sherpa-onnx, not 'espeak'"),
        ('vad_engine = "webrtc"', "vad_engine must be one of onnxruntime, sherpa-onnx, not 'webrtc'"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, error: str) -> None:
    f = tmp_path / "g.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=error):
        load_settings({"GREENROOM_CONFIG": str(f)})


def test_emotion_tags_are_asked_of_a_configured_model_only_unless_told(tmp_path: Path) -> None:
    def asks(**env: str) -> bool:
        return load_settings(env, file=tmp_path / "none.toml").asks_emotion_tags

    assert not asks() and asks(OPENAI_BASE_URL="http://x/v1")
    assert asks(GREENROOM_EMOTION_TAGS="ON") and not asks(OPENAI_BASE_URL="http://x/v1", GREENROOM_EMOTION_TAGS="off")


def test_the_tts_engine_is_onnxruntime_unless_told(tmp_path: Path) -> None:
    def engine(**env: str) -> str:
        return load_settings(env, file=tmp_path / "none.toml").tts_engine

    assert engine() == "onnxruntime" and engine(GREENROOM_TTS_ENGINE="sherpa-onnx") == "sherpa-onnx"


def test_the_vad_engine_is_onnxruntime_unless_told(tmp_path: Path) -> None:
    def engine(**env: str) -> str:
        return load_settings(env, file=tmp_path / "none.toml").vad_engine

    assert engine() == "onnxruntime" and engine(GREENROOM_VAD_ENGINE="sherpa-onnx") == "sherpa-onnx"


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"GREENROOM_CONFIG": str(tmp_path / "nope.toml")})


def test_task_settings_and_mcp_servers_are_read_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text('[[mcp_servers]]\nname = "files"\ncommand = "{root}/x"\nargs = ["{data_dir}/f"]\n')
    s = load_settings(
        {"GREENROOM_CONFIG": str(config), "GREENROOM_DATA_DIR": "/d", "GREENROOM_API_TOKENS": "t1:ann, t2:bo",
         "MAX_TOOL_EXECUTION_DEPTH": "5", "TOOL_EXECUTION_TIMEOUT": "2.5", "GREENROOM_TASK_RETRIES": "0"}
    )  # fmt: skip
    assert s.mcp_servers[0].command.endswith("/x") and s.mcp_servers[0].args == ("/d/f",)
    assert s.api_tokens == (("t1", "ann"), ("t2", "bo"))
    assert (s.max_tool_depth, s.tool_timeout, s.task_retries) == (5, 2.5, 0)
    for bad, why in [
        ('[[mcp_servers]]\nname = "x"\n', "exactly one of 'command' or 'url'"),
        ('[[mcp_servers]]\nname = "a b"\ncommand = "c"\n', "needs a 'name'"),
        ('[[mcp_servers]]\nname = "x"\ncommand = "c"\nargs = "a"\n', "args must be a list"),
    ]:
        config.write_text(bad)
        with pytest.raises(ConfigError, match=why):
            load_settings({"GREENROOM_CONFIG": str(config)})
    with pytest.raises(ConfigError, match="token:user"):
        load_settings({"GREENROOM_API_TOKENS": "nocolon"})
    with pytest.raises(ConfigError, match="task_retries"):
        load_settings({"GREENROOM_TASK_RETRIES": "-1"})


def test_the_shipped_file_starts_what_the_defaults_start(tmp_path: Path) -> None:
    shipped = load_settings({"GREENROOM_DATA_DIR": str(tmp_path)})
    default = load_settings({"GREENROOM_DATA_DIR": str(tmp_path)}, file=tmp_path / "none.toml")
    assert shipped.groups == default.groups
    # ...and gives the executor the filesystem MCP server `make run` installs
    assert [(s.name, Path(s.command).name) for s in shipped.mcp_servers] == [("files", "mcp-server-filesystem")]
