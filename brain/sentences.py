"""Sentence boundaries in a stream of text deltas, so speech can start before the reply ends."""

from __future__ import annotations

import re

# An end mark, optional closing quotes/brackets, then whitespace. Abbreviations like "Dr." and
# decimals like "3.5" are not ends; a short first clause may be cut at a comma for a fast start.
_END = re.compile(r"[.!?…]+[\"')\]]*\s+")
CLAUSE_MARKS = ",;:—"
"""Where a sentence may be cut short of its end."""
_CLAUSE = re.compile(f"[{CLAUSE_MARKS}]" + r"\s+")
_WORD = re.compile(r"\S+")
_ABBREV = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "e.g.", "i.e.", "etc.", "no.", "jr.", "sr."}


class SentenceSplitter:
    """``fast_start``: the reply's first clause comes out on its own, so speech can start
    before the first sentence is complete: up to a comma (2+ words), or its first
    ``first_words`` words when the sentence runs on without one: ``FIRST_WORDS`` for a reply
    written alone, ``SHARED_FIRST_WORDS`` beside others. Three, not four, alone: Piper
    says three words in ~100 ms against ~130 (1.1 s of speech against 1.3, time enough for
    the next piece), and the model writes them a word sooner; in bench/voice.py, back to
    back, voice-to-voice p50 466 and 476 ms against 572 and 532, 8 at once kept up in 8, 8, 8
    and 7 of 8 against 8 in all four (2026-11-23).

    ``max_words``: a longer sentence comes out in pieces of at most that many words, cut
    after the last clause mark that leaves both sides at least ``MIN_PIECE`` words, else
    at the limit, as soon as each piece is complete. A synthesizer's working memory and
    time grow with the length of what it says at once (Piper: ~22 MB and ~0.1 s a second
    of speech), and the first words of a long sentence need not wait for its end."""

    FIRST_WORDS = 3
    SHARED_FIRST_WORDS = 4
    """The first piece's words while other replies are being written: with the CPU shared, a
    3-word start ran dry more often (8 at once in a slow hour, back to back: 6, 6 and 7 of 8
    kept up, closest margins -0.5, -1.2 and -0.3 s, against 8, 8 and 7, +0.35, +0.35 and
    -0.1 s with 4 words). With this choice, two later runs of three rounds: 8, 7, 6 and 7,
    8, 8 of 8, against 8, 8, 5 with 4 words for every reply: 8 at once is at this machine's
    edge either way. Rounds that fail by over a second most likely wait on the model's text:
    no Piper generation in a logged 8-at-once run took more than 0.9 s."""
    MAX_WORDS = 12
    MIN_PIECE = 3

    def __init__(
        self,
        min_chars: int = 2,
        fast_start: bool = True,
        max_words: int | None = MAX_WORDS,
        first_words: int = FIRST_WORDS,
    ) -> None:
        self._buf = ""
        self._min = min_chars
        self._fast = fast_start
        self._max = max_words
        self._first = first_words

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
                if len(words) > self._first:  # the last of them is complete: a space followed it
                    cut = _nth_word_end(self._buf, self._first)
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
            out.extend(self._pieces(candidate, final=True)[0])
            start = match.end()
        self._buf = self._buf[start:]
        # A sentence still running: its pieces so far whose words are all complete.
        if self._max is not None and len(self._buf.split()) > self._max:
            pieces, used = self._pieces(_complete_words(self._buf), final=False)
            out.extend(pieces)
            self._buf = self._buf[used:]
        return out

    def running(self) -> str:
        """The complete words of the sentence still being written (not yet in a piece)."""
        return _complete_words(self._buf).strip()

    def flush(self) -> list[str]:
        """Whatever is left at the end of the reply."""
        rest, self._buf = self._buf.strip(), ""
        return self._pieces(rest, final=True)[0] if rest else []

    def _pieces(self, text: str, *, final: bool) -> tuple[list[str], int]:
        """``text`` cut into pieces of at most ``max_words`` words, and how much of it they
        cover: all of it when ``final``, else the text after the last piece is left for
        more words to join it."""
        if self._max is None:
            return ([text.strip()] if final else []), (len(text) if final else 0)
        ends = [m.end() for m in _WORD.finditer(text)]
        pieces: list[str] = []
        used = first = 0  # characters and words already cut off
        while len(ends) - first > self._max:
            n = self._max
            for k in range(self._max, self.MIN_PIECE - 1, -1):  # the last clause mark that leaves enough
                if text[ends[first + k - 1] - 1] in CLAUSE_MARKS and len(ends) - first - k >= self.MIN_PIECE:
                    n = k
                    break
            if final and len(ends) - first - n < self.MIN_PIECE:  # no stub at the end: halve instead
                n = (len(ends) - first + 1) // 2
            pieces.append(text[used : ends[first + n - 1]].strip())
            used, first = ends[first + n - 1], first + n
        if final:
            pieces.append(text[used:].strip())
            used = len(text)
        return [p for p in pieces if p], used


def halve(text: str, min_words: int = SentenceSplitter.MIN_PIECE) -> tuple[str, str] | None:
    """``text`` in two pieces of at least ``min_words`` words each, cut after the clause mark
    nearest its middle, else at the middle word; None when it is too short to cut."""
    ends = [m.end() for m in _WORD.finditer(text)]
    if len(ends) < 2 * min_words:
        return None
    middle = len(ends) // 2
    marks = [k for k in range(min_words, len(ends) - min_words + 1) if text[ends[k - 1] - 1] in CLAUSE_MARKS]
    n = min(marks, key=lambda k: abs(k - middle)) if marks else middle
    return text[: ends[n - 1]].strip(), text[ends[n - 1] :].strip()


def _complete_words(text: str) -> str:
    """``text`` up to its last word that is complete (a space followed it)."""
    return text if text[-1:].isspace() else text[: _last_word_start(text)]


def _last_word_start(text: str) -> int:
    """Index of the last word of ``text`` (it may still grow)."""
    words = list(_WORD.finditer(text))
    return words[-1].start() if words else len(text)


def _nth_word_end(text: str, n: int) -> int:
    """Index just past the ``n``-th word of ``text``."""
    return [m.end() for m in _WORD.finditer(text)][n - 1]
