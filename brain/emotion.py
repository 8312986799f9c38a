"""Emotion: read from a leading ``[tag]`` the model was asked to write, else a keyword classifier."""

from __future__ import annotations

import re
from collections.abc import Sequence

EMOTION_INSTRUCTIONS = (
    "Begin every reply with your emotion in square brackets, one of: {emotions}. Example: [happy] Hello!"
)

_TAG = re.compile(r"^\s*\[([A-Za-z_-]{2,20})\]\s*")

_KEYWORDS: dict[str, tuple[str, ...]] = {
    "happy": ("glad", "great", "wonderful", "love", "happy", "yay", "delighted", "!"),
    "sad": ("sorry", "sad", "unfortunately", "miss", "regret"),
    "angry": ("angry", "furious", "outrage", "blast", "curse"),
    "surprised": ("wow", "whoa", "really?", "surprising", "amazing"),
    "curious": ("wonder", "curious", "how about", "what if", "?"),
    "concerned": ("careful", "worry", "concern", "are you okay"),
    "amused": ("haha", "ha!", "funny", "laugh"),
    "calm": ("breathe", "calm", "peace", "gently"),
    "thoughtful": ("perhaps", "consider", "think", "maybe"),
}


class TagReader:
    """Feeds on streamed deltas; strips a leading ``[emotion]`` tag and reports it once.

    Holds text back only while a tag may still be forming at the very start.
    """

    def __init__(self, allowed: Sequence[str]) -> None:
        self._allowed = {e.lower() for e in allowed}
        self._head = ""
        self._done = False
        self.emotion: str | None = None

    def feed(self, delta: str) -> str:
        """Return the text to show for this delta (possibly empty while the head is pending)."""
        if self._done:
            return delta
        self._head += delta
        stripped = self._head.lstrip()
        if not stripped:
            return ""
        if stripped[0] != "[":
            return self._release()
        match = _TAG.match(self._head)
        if match:
            tag = match.group(1).lower()
            if tag in self._allowed or not self._allowed:
                self.emotion = tag
            rest = self._head[match.end() :]
            self._head = rest
            return self._release()
        if "]" in stripped or len(stripped) > 24:  # not a tag after all
            return self._release()
        return ""

    def flush(self) -> str:
        return "" if self._done else self._release()

    def _release(self) -> str:
        self._done = True
        text, self._head = self._head, ""
        return text


def classify(text: str, allowed: Sequence[str]) -> str:
    """Keyword classifier used when the model gave no tag: the allowed emotion with most hits."""
    lowered = text.lower()
    best, best_score = (allowed[-1] if allowed else "neutral"), 0
    for emotion in allowed:
        score = sum(lowered.count(k) for k in _KEYWORDS.get(emotion, ()))
        if score > best_score:
            best, best_score = emotion, score
    return best
