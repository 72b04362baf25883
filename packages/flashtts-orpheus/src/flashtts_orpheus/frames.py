"""Orpheus token ids, prompts, and the parsing of generated ids into SNAC frames.

Facts from canopyai/Orpheus-TTS (``orpheus_tts/engine_class.py`` and ``decoder.py``): the LLM emits
audio as ``<custom_token_N>`` ids in frames of 7; slot ``p`` (0..6) of a frame carries a code ``c``
(0..4095) as the id ``AUDIO_BASE + p * 4096 + c``. Code 0 is a valid code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

logger = logging.getLogger("flashtts.orpheus")

# Llama 3 ids kept by Orpheus, and its <custom_token_N> = 128256 + N markers.
BEGIN_OF_TEXT = 128000
EOT = 128009  # <|eot_id|>
PAD = 128004  # <|finetune_right_pad_id|>
CUSTOM_TOKEN_BASE = 128256
START_OF_SPEECH = 128257
END_OF_SPEECH = 128258  # the stop id
START_OF_HUMAN = 128259
END_OF_HUMAN = 128260
START_OF_AI = 128261
END_OF_AI = 128262
PAD_TOKEN = 128263
AUDIO_BASE = 128266  # <custom_token_10>

CODEBOOK_SIZE = 4096
SLOTS = 7  # ids per frame
AUDIO_END = AUDIO_BASE + SLOTS * CODEBOOK_SIZE  # exclusive
VOCAB_SIZE = 156940  # the released vocabulary (covers AUDIO_END with two spare custom tokens)

# Slots of a frame on SNAC's three codebooks (coarse to fine): 1 + 2 + 4 codes.
CODEBOOK_SLOTS = ((0,), (1, 4), (2, 3, 5, 6))

SAMPLES_PER_FRAME = 2048  # SNAC hop 512 x the coarse stride 4
WINDOW_FRAMES = 4  # upstream decodes the last 28 codes ...
EMIT_START, EMIT_END = 2048, 4096  # ... and keeps this part of the window (its second frame)


def audio_token_ids() -> tuple[int, ...]:
    """Every id the LLM may emit in speech: all audio ids (the stop id is added by the backend)."""
    return tuple(range(AUDIO_BASE, AUDIO_END))


def build_prompt(text_ids: Sequence[int]) -> list[int]:
    """The prompt around the tokenized ``"{voice}: {text}"`` (without BOS), as upstream builds it."""
    return [START_OF_HUMAN, BEGIN_OF_TEXT, *text_ids, EOT, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH]


def frames_to_codes(frames: np.ndarray) -> list[np.ndarray]:
    """``frames`` (n, 7) of codes to SNAC's three codebooks: shapes (n,), (2n,), (4n,), interleaved per frame."""
    frames = np.asarray(frames, dtype=np.int64).reshape(-1, SLOTS)
    return [frames[:, list(slots)].reshape(-1) for slots in CODEBOOK_SLOTS]


@dataclass
class FrameStats:
    """What a parser saw: complete frames, frames skipped as malformed, a partial frame left at the end."""

    frames: int = 0
    malformed: int = 0
    incomplete: int = 0


class FrameParser:
    """Turns a stream of generated ids into complete 7-code frames.

    Each id says its own slot (``(id - AUDIO_BASE) // 4096``), so framing does not depend on counting:
    an id in the wrong slot, or a non-audio id, ends the frame being built, which is skipped and
    counted as malformed; a slot-0 id always starts a new frame, so one bad id costs one frame, not
    the rest of the utterance (upstream's running counter shifts every later code after a miss).
    """

    def __init__(self) -> None:
        self.stats = FrameStats()
        self._partial: list[int] = []
        self._broken = False  # inside a malformed run already counted

    def feed(self, ids: Iterable[int]) -> list[np.ndarray]:
        """Consume ids; return the frames they complete, each an int64 array of 7 codes."""
        done: list[np.ndarray] = []
        for token in ids:
            offset = int(token) - AUDIO_BASE
            slot, code = divmod(offset, CODEBOOK_SIZE)
            if not (0 <= offset < SLOTS * CODEBOOK_SIZE):
                self._break()
                continue
            if slot == 0:
                if self._partial:
                    self._break()
                self._broken = False
                self._partial = [code]
            elif not self._broken and slot == len(self._partial):
                self._partial.append(code)
            else:
                self._break()
                continue
            if len(self._partial) == SLOTS:
                done.append(np.asarray(self._partial, dtype=np.int64))
                self._partial = []
                self.stats.frames += 1
        return done

    def finish(self) -> FrameStats:
        """End of the sequence: a partial frame left over (cut by max_tokens) is counted, not decoded."""
        if self._partial:
            self.stats.incomplete += 1
            self._partial = []
        return self.stats

    def _break(self) -> None:
        if not self._broken:
            self.stats.malformed += 1
            self._broken = True
        self._partial = []
