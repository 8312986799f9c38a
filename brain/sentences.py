"""Sentence boundaries in a stream of text deltas, so speech can start before the reply ends."""

from __future__ import annotations

import re

# An end mark, optional closing quotes/brackets, then whitespace. Abbreviations like "Dr." and
# decimals like "3.5" are not ends; a short first clause may be cut at a comma for a fast start.
_END = re.compile(r"[.!?…]+[\"')\]]*\s+")
_CLAUSE = re.compile(r"[,;:—]\s+")
_ABBREV = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "e.g.", "i.e.", "etc.", "no.", "jr.", "sr."}


class SentenceSplitter:
    """``fast_start``: the reply's first clause comes out on its own, so speech can start
    before the first sentence is complete: up to a comma (2+ words), or its first
    ``FIRST_WORDS`` words when the sentence runs on without one."""

    FIRST_WORDS = 4

    def __init__(self, min_chars: int = 2, fast_start: bool = True) -> None:
        self._buf = ""
        self._min = min_chars
        self._fast = fast_start

    def feed(self, delta: str) -> list[str]:
        """Complete sentences now available (stripped), in order."""
        self._buf += delta
        out: list[str] = []
        start = 0
        if self._fast:
            end = _END.search(self._buf)
            limit = end.start() if end is not None else len(self._buf)
            for clause in _CLAUSE.finditer(self._buf, 0, limit):
                first = self._buf[: clause.end()].strip()
                if len(first.split()) >= 2:
                    out.append(first)
                    start = clause.end()
                    self._fast = False
                    break
            if self._fast and end is None:
                words = self._buf.split()
                if len(words) > self.FIRST_WORDS:  # the fifth word is complete: a space followed it
                    cut = _nth_word_end(self._buf, self.FIRST_WORDS)
                    out.append(self._buf[:cut].strip())
                    start = cut
                    self._fast = False
            if end is not None:
                self._fast = False
        for match in _END.finditer(self._buf, start):
            candidate = self._buf[start : match.end()].strip()
            last_word = candidate.rsplit(None, 1)[-1].lower() if candidate else ""
            if last_word in _ABBREV or len(candidate) < self._min:
                continue
            out.append(candidate)
            start = match.end()
        self._buf = self._buf[start:]
        return out

    def flush(self) -> list[str]:
        """Whatever is left at the end of the reply."""
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []


def _nth_word_end(text: str, n: int) -> int:
    """Index just past the ``n``-th word of ``text``."""
    return [m.end() for m in re.finditer(r"\S+", text)][n - 1]
