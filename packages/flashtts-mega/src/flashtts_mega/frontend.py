"""MegaTTS3's text front end: language (English or Chinese), normalisation, splitting into segments.

Upstream (tts/infer_cli.py) runs ``langdetect`` on the text, normalises English with WeTextProcessing's
English normaliser and everything else with its Chinese one, then splits English into chunks of at
most 130 UTF-8 bytes at clause punctuation and Chinese into chunks of about 60 Han characters,
preferring sentence ends, with ASCII punctuation made full-width.

What we do differently, and why:

- Language: by script, not ``langdetect``. The model knows only English and Chinese, and langdetect
  on a short English text ("Hi.") often answers some third language, which upstream then treats as
  Chinese. Here text is Chinese when it holds Han characters and they outnumber its Latin words.
- Normalisation: the ``wetext`` package, the WeTextProcessing runtime (the same grammars as prebuilt
  FSTs read with kaldifst): it installs from a wheel in seconds, where WeTextProcessing itself needs
  pynini (a 165 MB wheel, ~700 MB installed) and compiles its grammars on first use.
- Splitting: core's :func:`flashtts_core.text.split_text` (cut after sentence punctuation, then
  clauses, merge greedily) with upstream's measures: UTF-8 bytes up to 130 for English, Han characters
  up to 60 for Chinese.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Literal

from flashtts_core.text import normalize_text, split_text

logger = logging.getLogger("flashtts.mega")

Language = Literal["en", "zh"]

ENGLISH_MAX_BYTES = 130
CHINESE_MAX_HAN = 60

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")
# Upstream makes a Chinese segment's ASCII punctuation full-width.
_FULL_WIDTH = str.maketrans({".": "。", ",": "，", "!": "！", "?": "？", ";": "；", ":": "："})


def detect_language(text: str) -> Language:
    """``zh`` when Han characters outnumber Latin words, else ``en``."""
    han = len(_HAN.findall(text))
    return "zh" if han and han >= len(_LATIN_WORD.findall(text)) else "en"


class _Normalizers:
    """wetext's English and Chinese normalisers, each built once on first use (about 1 s each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_lang: dict[str, object] = {}

    def get(self, lang: Language):
        with self._lock:
            normalizer = self._by_lang.get(lang)
            if normalizer is None:
                from wetext import Normalizer

                # Upstream's Chinese settings: keep erhua and interjections.
                options = {"remove_erhua": False, "remove_interjections": False} if lang == "zh" else {}
                normalizer = Normalizer(lang=lang, operator="tn", **options)
                self._by_lang[lang] = normalizer
            return normalizer


_NORMALIZERS = _Normalizers()


def normalize(text: str, lang: Language) -> str:
    """Numbers, dates, units and symbols written out as words (``$3`` → ``three dollars``)."""
    text = normalize_text(text)
    if not text:
        return ""
    try:
        out = _NORMALIZERS.get(lang).normalize(text)
    except Exception as exc:  # a grammar failing on odd input must not fail the request: speak it as written
        logger.warning("text normalisation failed (%s); using the text as written", exc)
        return text
    return normalize_text(out)


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


def _han_length(text: str) -> int:
    # Text with no Han characters still has to be cut somewhere: count other characters as a third.
    han = len(_HAN.findall(text))
    return han + (len(text) - han) // 3


def _pack_words(text: str, limit: int) -> list[str]:
    """An unpunctuated run over ``limit`` bytes, cut between words (core's hard cut counts words)."""
    out: list[str] = []
    current = ""
    for word in text.split():
        joined = f"{current} {word}" if current else word
        if current and _utf8_length(joined) > limit:
            out.append(current)
            joined = word
        current = joined
    if current:
        out.append(current)
    return out


def split_segments(text: str, lang: Language) -> list[str]:
    """Segments as upstream sizes them: ≤ 130 UTF-8 bytes (English) or ~60 Han characters (Chinese)."""
    if lang == "en":
        out: list[str] = []
        for segment in split_text(text, ENGLISH_MAX_BYTES, ENGLISH_MAX_BYTES, length=_utf8_length):
            out.extend(
                _pack_words(segment, ENGLISH_MAX_BYTES) if _utf8_length(segment) > ENGLISH_MAX_BYTES else [segment]
            )
        return out
    return [s.translate(_FULL_WIDTH) for s in split_text(text, CHINESE_MAX_HAN, CHINESE_MAX_HAN, length=_han_length)]


def prepare_text(text: str) -> tuple[Language, list[str]]:
    """Language, then the normalised text's segments (empty when nothing is left to speak)."""
    lang = detect_language(text)
    return lang, split_segments(normalize(text, lang), lang)
