"""Prompt building: the card, a summary of older turns, recent history within a token budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from brain.emotion import EMOTION_INSTRUCTIONS


@dataclass(frozen=True, slots=True)
class Turn:
    speaker: str
    """``user`` or ``assistant``."""
    text: str


def estimate_tokens(text: str) -> int:
    """About four characters a token for English; good enough to keep inside a context window."""
    return len(text) // 4 + 1


def split_history(history: Sequence[Turn], budget: int) -> tuple[list[Turn], list[Turn]]:
    """(older, recent): the most recent turns that fit ``budget`` tokens, and the rest."""
    recent: list[Turn] = []
    used = 0
    for turn in reversed(history):
        cost = estimate_tokens(turn.text) + 4
        if used + cost > budget:
            break
        recent.append(turn)
        used += cost
    recent.reverse()
    return list(history[: len(history) - len(recent)]), recent


def summarize(older: Sequence[Turn], limit_chars: int = 600) -> str:
    """An extractive summary of turns that no longer fit: the first sentence of each, newest kept."""
    lines = []
    for turn in older:
        first = turn.text.strip().split(". ")[0][:120]
        who = "User" if turn.speaker == "user" else "You"
        lines.append(f"{who}: {first}")
    text = "\n".join(lines)
    if len(text) > limit_chars:
        text = "…" + text[-limit_chars:]
    return text


def build_messages(
    persona: str,
    emotions: Sequence[str],
    history: Sequence[Turn],
    user_text: str,
    *,
    budget: int = 1200,
    extra_context: str = "",
    emotion_tags: bool = True,
) -> list[dict[str, str]]:
    """OpenAI chat messages for one turn. ``history`` excludes the current user text.
    ``emotion_tags``: ask the model to open its reply with one of ``emotions`` in brackets."""
    older, recent = split_history(history, budget)
    system = persona
    if emotion_tags:
        system += "\n\n" + EMOTION_INSTRUCTIONS.format(emotions=", ".join(emotions))
    if older:
        system += "\n\nEarlier in this conversation:\n" + summarize(older)
    if extra_context:
        system += "\n\n" + extra_context
    messages = [{"role": "system", "content": system}]
    messages += [{"role": "user" if t.speaker == "user" else "assistant", "content": t.text} for t in recent]
    messages.append({"role": "user", "content": user_text})
    return messages
