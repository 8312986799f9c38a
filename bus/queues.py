"""The work queues the broker serves, each with a fixed slot.

The slot fixes the queue's TCP ports (see ``bus/endpoints.py``), so a slot is
never reused or renumbered: add new queues at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

QUEUES: Mapping[str, int] = MappingProxyType(
    {
        "echo": 0,  # diagnostics: the echo actor answers pings pushed here
        "character": 1,  # chat.generate: one character agent replica takes each turn
        "planner": 2,  # task.plan: one planner turns a request into a plan
        "executor": 3,  # task.execute: one executor runs a plan's steps with tools
        "analyzer": 4,  # task.analyze: one analyzer judges the results and answers
    }
)
