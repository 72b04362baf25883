"""Text normalisation and splitting of long text into segments an engine can speak one by one."""

from __future__ import annotations

import re
import unicodedata
from typing import Callable

# Sentence ends: Chinese/Japanese full-width marks always end a sentence; Western marks only when
# followed by whitespace or the end, so "3.14" and "e.g.x" stay whole.
_SENTENCE_END = re.compile(r"([。？！；：…]+[”’」』）)]*|[.!?;:]+[\"'”’)\]]*(?=\s|$)|\n+)")
_CLAUSE_END = re.compile(r"([，、,]+)")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_UNIT = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\s\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+"
)


def normalize_text(text: str) -> str:
    """Drop control and zero-width characters, unify line ends, collapse runs of spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch == "\n" or ch == "\t" or unicodedata.category(ch) not in ("Cc", "Cf"))
    text = re.sub(r"[ \t\u00a0\u3000]+", " ", text)
    text = re.sub(r" *\n[ \n]*", "\n", text)
    return text.strip()


def text_length(text: str) -> int:
    """Length in units: one per CJK character, one per run of other non-space characters (a word)."""
    return len(_UNIT.findall(text))


def text_units(text: str) -> list[str]:
    """The units :func:`text_length` counts, in order: words with their punctuation, each CJK character alone."""
    return _UNIT.findall(text)


def _pieces(text: str, pattern: re.Pattern) -> list[str]:
    parts = pattern.split(text)
    out: list[str] = []
    for i in range(0, len(parts), 2):
        piece = parts[i] + (parts[i + 1] if i + 1 < len(parts) else "")
        if piece.strip():
            out.append(piece.strip())
    return out


def _hard_split(text: str, window: int, length: Callable[[str], int]) -> list[str]:
    """Cut text with no usable punctuation into pieces of at most ``window`` units."""
    units = [(m.start(), m.end()) for m in _UNIT.finditer(text)]
    out = []
    for i in range(0, len(units), window):
        chunk = units[i : i + window]
        out.append(text[chunk[0][0] : chunk[-1][1]].strip())
    return [c for c in out if c]


def split_text(
    text: str,
    length_threshold: int = 50,
    window_size: int = 50,
    length: Callable[[str], int] = text_length,
) -> list[str]:
    """Split ``text`` into segments.

    Text of at most ``length_threshold`` units is one segment. Longer text is cut after sentence
    punctuation (then commas, then hard cuts for unpunctuated runs) and the pieces are merged greedily
    into segments of at most ``window_size`` units.
    """
    text = normalize_text(text)
    if not text:
        return []
    if length(text) <= length_threshold:
        return [text.replace("\n", " ")]
    pieces: list[str] = []
    for sentence in _pieces(text, _SENTENCE_END):
        if length(sentence) <= window_size:
            pieces.append(sentence)
            continue
        for clause in _pieces(sentence, _CLAUSE_END):
            if length(clause) <= window_size:
                pieces.append(clause)
            else:
                pieces.extend(_hard_split(clause, window_size, length))
    segments: list[str] = []
    current = ""
    for piece in pieces:
        if not current:
            current = piece
            continue
        joined = _join(current, piece)
        if length(joined) <= window_size:
            current = joined
        else:
            segments.append(current)
            current = piece
    if current:
        segments.append(current)
    return segments


def _join(a: str, b: str) -> str:
    if _CJK.search(a[-1:]) or _CJK.search(b[:1]) or a.endswith(("。", "，", "！", "？", "；", "：", "、")):
        return a + b
    return f"{a} {b}"
