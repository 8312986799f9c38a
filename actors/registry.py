"""Actor names that ``run.py actor NAME`` accepts, mapped to their classes.

The table is fixed in code; a ``module:Class`` spec is also accepted from the
command line (an operator's choice, never something read off the wire).
"""

from __future__ import annotations

import importlib

from actors.actor import Actor

ACTORS: dict[str, str] = {
    "echo": "actors.echo:Echo",
    "session": "actors.session:SessionManager",
    "orchestrator": "actors.orchestrator:Orchestrator",
    "character": "actors.character:CharacterAgent",
    "llm": "actors.llm_server:LocalLLM",
    "stt": "actors.stt:SttWorker",
    "tts": "actors.tts:TtsWorker",
    "resampler": "actors.resampler:Resampler",
    "tasks": "actors.tasks:TaskManager",
    "planner": "actors.planner:Planner",
    "executor": "actors.executor:Executor",
    "analyzer": "actors.analyzer:Analyzer",
    "telemetry": "actors.telemetry:TelemetrySink",
}


def load(spec: str) -> type[Actor]:
    target = ACTORS.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep:
        raise ValueError(f"unknown actor {spec!r}; known: {', '.join(sorted(ACTORS))} (or module:Class)")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load actor {spec!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Actor)) or not cls.name:
        raise ValueError(f"{target} is not a named Actor subclass")
    return cls
