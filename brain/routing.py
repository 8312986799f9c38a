"""The orchestrator's decision: which agent handles a turn."""

from __future__ import annotations

import re
from dataclasses import dataclass

CHARACTER = "character"
TASK = "task"

# Requests that ask for work on data rather than conversation. The task agents arrive with the
# tasks issue; until they are deployed the orchestrator is told they are unavailable.
_TASK_HINTS = re.compile(
    r"\b(revenue|sales|orders?|report|chart|plot|how many|average|total|sum of|query|dataset)\b", re.I
)


@dataclass(frozen=True, slots=True)
class Decision:
    agent: str
    """``character`` or ``task``."""
    reason: str


def route(text: str, *, tasks_available: bool) -> Decision:
    """Pick the agent for one user turn."""
    if not text.strip():
        return Decision(CHARACTER, "empty text: let the character respond")
    if tasks_available and _TASK_HINTS.search(text):
        return Decision(TASK, "asks about data")
    return Decision(CHARACTER, "conversation")
