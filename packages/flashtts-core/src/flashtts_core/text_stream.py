"""Splitting text that arrives in pieces (an LLM's reply, token by token) into segments to speak.

``split_text`` (text.py) sees the whole text at once; a stream has to decide with only a prefix in
hand. :class:`IncrementalSplitter` emits a segment as soon as it can no longer change:

- a **sentence** ends at ``。！？…`` (once the next character is not a closing quote or bracket),
  at ``.!?`` followed by whitespace (so ``3.5``, ``e.g.x`` and a mark the next piece may continue
  stay open), or at a line break; ``Dr.``, ``e.g.`` and initials such as ``J.`` do not end one;
- a **clause** (``, ; :`` followed by whitespace, ``，、；：``) ends a segment only once the buffered
  text is longer than ``clause_threshold`` units, so short replies are spoken whole;
- text with neither, longer than ``max_length`` units, is cut after its ``max_length``-th unit
  (never inside a word: the last, perhaps unfinished, word stays buffered). A clause cut too keeps
  a segment within ``max_length``.

Units are those of ``text.text_length``: a word, or one CJK character. ``flush`` treats the end of
the text as whitespace and returns the rest. Segments are normalised as ``split_text`` normalises
text (``normalize_text``, line breaks as spaces); an engine still splits a long one by its own
``length_threshold``/``window_size``.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

from .text import _UNIT, normalize_text, text_length

_CLOSERS = "\"'”’」』）)\\]"
# While text may still come: a full-width mark once a character other than a closer follows it; any mark
# once whitespace follows it; a line break. At the end of the text, the end counts as whitespace.
_SENTENCE_OPEN = re.compile(rf"[。！？…]+[{_CLOSERS}]*(?=[^\s{_CLOSERS}])|[。！？…!?.]+[{_CLOSERS}]*(?=\s)|\n")
_SENTENCE_FINAL = re.compile(rf"[。！？…!?.]+[{_CLOSERS}]*(?=\s|$)|\n")
_CLAUSE_OPEN = re.compile(rf"[，、；：]+[{_CLOSERS}]*(?=[^\s{_CLOSERS}])|[，、；：,;:]+[{_CLOSERS}]*(?=\s)")
_CLAUSE_FINAL = re.compile(rf"[，、；：,;:]+[{_CLOSERS}]*(?=\s|$)")
# A lone "." after one of these is not a sentence end ("Dr. Smith", "e.g. this").
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "cf", "fig", "approx"}
)
_INITIAL = re.compile(r"[A-HJ-Z]|(?:[A-Za-z]\.)+[A-Za-z]")  # "J." and "U.S." ("I." ends sentences)
_LAST_WORD = re.compile(r"[^\s\"'“‘(\[（「『]+$")


def _abbreviation_before(text: str, end: int) -> bool:
    found = _LAST_WORD.search(text, 0, end)
    if found is None:
        return False
    word = found.group()
    return word.lower() in ABBREVIATIONS or _INITIAL.fullmatch(word) is not None


class IncrementalSplitter:
    """Feed text with :meth:`push` as it arrives; take complete segments as they are returned;
    :meth:`flush` at the end of the text returns the rest (and starts over)."""

    def __init__(
        self,
        clause_threshold: int = 20,
        max_length: int = 50,
        length: Callable[[str], int] = text_length,
    ):
        if clause_threshold < 1 or max_length < 1:
            raise ValueError("clause_threshold and max_length must be at least 1")
        self.clause_threshold = clause_threshold
        self.max_length = max_length
        self.length = length
        self._buffer = ""

    @property
    def buffered(self) -> str:
        """The text received and not yet returned in a segment."""
        return self._buffer

    def push(self, text: str) -> list[str]:
        """Add ``text``; return the segments it completed (often none)."""
        self._buffer += text
        return self._take(final=False)

    def flush(self) -> list[str]:
        """The end of the text: every segment still buffered."""
        segments = self._take(final=True)
        rest = _clean(self._buffer)
        self._buffer = ""
        return segments + ([rest] if rest else [])

    def _take(self, final: bool) -> list[str]:
        segments: list[str] = []
        while True:
            cut = self._next_cut(final)
            if cut is None:
                return segments
            segment, self._buffer = _clean(self._buffer[:cut]), self._buffer[cut:]
            if segment:
                segments.append(segment)

    def _next_cut(self, final: bool) -> Optional[int]:
        text = self._buffer
        sentence = _SENTENCE_FINAL if final else _SENTENCE_OPEN
        for match in sentence.finditer(text):
            if match.group() == "." and _abbreviation_before(text, match.start()):
                continue
            return match.end()
        size = self.length(text)
        if size > self.clause_threshold:
            clause = _CLAUSE_FINAL if final else _CLAUSE_OPEN
            ends = [m.end() for m in clause.finditer(text) if self.length(text[: m.end()]) <= self.max_length]
            if ends:
                return ends[-1]
        if size > self.max_length:
            # After the last whole unit that keeps the segment within max_length; never after the last
            # unit (without final), which the next piece may continue.
            units = list(_UNIT.finditer(text))
            if not final:
                units = units[:-1]
            cut = None
            for unit in units:
                if self.length(text[: unit.end()]) > self.max_length:
                    break
                cut = unit.end()
            return cut
        return None


def _clean(segment: str) -> str:
    return normalize_text(segment).replace("\n", " ")
