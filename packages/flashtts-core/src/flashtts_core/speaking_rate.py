"""How long a text can plausibly take to speak, so that an engine can stop a runaway generation.

A model that never emits its stop token (a random demo model, or a real one looping on silence)
would otherwise run to its ``max_tokens`` on every segment: "Hi." would become a minute of audio.
Each engine therefore caps a segment's tokens at :func:`max_speech_seconds` of its text times the
engine's token rate. The bound always applies: a request's ``max_tokens`` can only lower it (clients
such as LiveKit's FlashTTS plugin send 32768 with every request), and the server's
``--speaking_rate_bound`` scales it (2 doubles it; 0 turns it off, leaving ``max_tokens`` and the
engine's own ceiling).

A segment cut by the bound is noted in its request's :class:`BoundReport` (the server sends it as a
response header, a log line and a metric), so a cut is never silent.

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

import logging
import math
import threading
import unicodedata
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .sampling import SamplingParams

logger = logging.getLogger("flashtts.core")

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


def segment_limit(
    text: str, tokens_per_second: float, ceiling: int, requested: Optional[int] = None, scale: float = 1.0
) -> tuple[int, bool]:
    """``(max_tokens, bounded)`` for one segment: the smallest of the request's ``max_tokens`` (else the
    engine's ``ceiling``) and the speaking-rate bound of ``text`` times ``scale`` at the engine's
    ``tokens_per_second``; ``bounded`` says the bound is the limit in force. ``scale`` 0 turns it off."""
    limit = max(1, int(requested if requested is not None else ceiling))
    if scale <= 0:
        return limit, False
    bound = max(1, math.ceil(max_speech_seconds(text) * scale * tokens_per_second))
    return (bound, True) if bound < limit else (limit, False)


def max_segment_tokens(
    text: str, tokens_per_second: float, ceiling: int, requested: Optional[int] = None, scale: float = 1.0
) -> int:
    """The ``max_tokens`` for one segment (see :func:`segment_limit`)."""
    return segment_limit(text, tokens_per_second, ceiling, requested, scale)[0]


@dataclass
class BoundReport:
    """What the speaking-rate bound did to one request: the segments it cut short."""

    request_id: str = ""
    cut_segments: int = 0
    cut_seconds: list[float] = field(default_factory=list)  # each cut segment's bound, in seconds
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def note_cut(self, seconds: float) -> None:
        with self._lock:
            self.cut_segments += 1
            self.cut_seconds.append(round(seconds, 3))
        logger.warning(
            "request %s: a segment reached its speaking-rate bound (%.1f s of audio) and was cut there; "
            "--speaking_rate_bound scales the bound (0 turns it off)",
            self.request_id,
            seconds,
        )


def bounded_params(
    params: "SamplingParams",
    text: str,
    tokens_per_second: float,
    requested: Optional[int],
    scale: float,
    report: Optional[BoundReport],
) -> "SamplingParams":
    """``params`` for one segment of ``text``: ``max_tokens`` from :func:`segment_limit` (``params.max_tokens``
    is the engine's ceiling), and, when the bound is the limit in force, the request's ``report`` so the
    token counter can note a segment that runs into it (a backend stream that ends at ``max_tokens``)."""
    limit, bounded = segment_limit(text, tokens_per_second, params.max_tokens, requested, scale)
    return replace(
        params,
        max_tokens=limit,
        bound_report=report if bounded else None,
        bound_seconds=limit / tokens_per_second if bounded else None,
    )
