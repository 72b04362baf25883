"""How long a text can plausibly take to speak, so that an engine can stop a runaway generation.

A model that never emits its stop token (a random demo model, or a real one looping on silence)
would otherwise run to its ``max_tokens`` on every segment: "Hi." would become a minute of audio.
Each engine therefore caps a segment's tokens at :func:`max_speech_seconds` of its text times the
engine's token rate, unless the request sets ``max_tokens`` itself.

The bound is deliberately generous, about three times slower than ordinary speech in each script,
so that slow voices, pauses and spelled-out numbers are never cut:

- letters of alphabetic scripts (Latin, Cyrillic, Greek, Arabic, Devanagari …): 0.2 s each
  (5 characters a second; conversational English is ~14 including spaces);
- CJK ideographs 0.5 s each (Mandarin is 4-5 a second), Hangul syllables 0.4 s, kana 0.3 s;
- digits and symbols 0.5 s each (``2024`` is read "twenty twenty-four", ``%`` is a word);
- punctuation 0.1 s (a pause); spaces and combining marks nothing;
- plus a floor of 2 s for every segment, so one short word still has room to breathe.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Optional

FLOOR_SECONDS = 2.0
LETTER_SECONDS = 0.2
IDEOGRAPH_SECONDS = 0.5
HANGUL_SECONDS = 0.4
KANA_SECONDS = 0.3
DIGIT_SECONDS = 0.5
SYMBOL_SECONDS = 0.5
PUNCTUATION_SECONDS = 0.1


def _char_seconds(ch: str) -> float:
    code = ord(ch)
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x3FFFF:
        return IDEOGRAPH_SECONDS
    if 0xAC00 <= code <= 0xD7AF:
        return HANGUL_SECONDS
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9F:
        return KANA_SECONDS
    category = unicodedata.category(ch)
    if category[0] == "L":
        return LETTER_SECONDS
    if category[0] == "N":
        return DIGIT_SECONDS
    if category[0] == "S":
        return SYMBOL_SECONDS
    if category[0] == "P":
        return PUNCTUATION_SECONDS
    return 0.0  # spaces, combining marks, controls, format characters


def max_speech_seconds(text: str) -> float:
    """The longest a segment of ``text`` should take to speak, in seconds (at least ``FLOOR_SECONDS``)."""
    return FLOOR_SECONDS + sum(_char_seconds(ch) for ch in text)


def max_segment_tokens(text: str, tokens_per_second: float, ceiling: int, requested: Optional[int] = None) -> int:
    """The ``max_tokens`` for one segment: ``requested`` when the request set it, else the speaking-rate
    bound of ``text`` at the engine's ``tokens_per_second``, never above the engine's own ``ceiling``."""
    if requested is not None:
        return requested
    return max(1, min(ceiling, math.ceil(max_speech_seconds(text) * tokens_per_second)))
