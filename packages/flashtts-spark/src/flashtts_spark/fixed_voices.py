"""``--fix_voice``: the built-in voices' sampled timbres, kept on disk so they survive restarts.

In control mode Spark-TTS samples a voice before speaking: a pitch value, a speed value and 32
global tokens (the speaker timbre BiCodec decodes with). A fixed voice keeps the pitch value and the
global tokens of the first request for each (gender, pitch level) and reuses them ever after; the
speed value and the semantic tokens are still sampled per request, so the speed label keeps working.
The key includes the pitch level because the global tokens carry the speaker's pitch: one timbre per
gender would silently ignore the pitch label.

Storage: ``ROLE_DIR/.spark-fixed-voices/{gender}-{pitch}.json`` (plain JSON, written atomically),
beside the saved roles; the leading dot keeps it out of the role list.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .vocabulary import GLOBAL_TOKENS_PER_VOICE, NUM_GLOBAL_CODES, NUM_PITCH_VALUES

logger = logging.getLogger("flashtts.spark")

FOLDER = ".spark-fixed-voices"


@dataclass(frozen=True)
class FixedVoice:
    gender: str
    pitch: str
    pitch_value: int
    global_tokens: tuple[int, ...]

    def as_dict(self) -> dict:
        return {
            "gender": self.gender,
            "pitch": self.pitch,
            "pitch_value": self.pitch_value,
            "global_tokens": list(self.global_tokens),
        }


class FixedVoiceStore:
    """Fixed voices by (gender, pitch level), cached in memory and in ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._voices: dict[tuple[str, str], FixedVoice] = {}
        self._lock = threading.Lock()

    def _file(self, gender: str, pitch: str) -> Path:
        return self.root / f"{gender}-{pitch}.json"

    def get(self, gender: str, pitch: str) -> Optional[FixedVoice]:
        """The stored voice, or None; a damaged file is reported and ignored (a new voice replaces it)."""
        key = (gender, pitch)
        voice = self._voices.get(key)
        if voice is not None:
            return voice
        path = self._file(gender, pitch)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            voice = FixedVoice(
                gender=gender,
                pitch=pitch,
                pitch_value=int(data["pitch_value"]),
                global_tokens=tuple(int(g) for g in data["global_tokens"]),
            )
            if not 0 <= voice.pitch_value < NUM_PITCH_VALUES:
                raise ValueError(f"pitch_value {voice.pitch_value} out of range")
            if len(voice.global_tokens) != GLOBAL_TOKENS_PER_VOICE or not all(
                0 <= g < NUM_GLOBAL_CODES for g in voice.global_tokens
            ):
                raise ValueError("global_tokens must be 32 codes in [0, 4096)")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring fixed voice %s: %s", path, exc)
            return None
        self._voices[key] = voice
        logger.info("fixed voice %s/%s loaded from %s", gender, pitch, path)
        return voice

    def put(self, voice: FixedVoice) -> FixedVoice:
        """Store ``voice`` unless one is already stored for its key; returns the one that is kept."""
        with self._lock:
            existing = self._voices.get((voice.gender, voice.pitch))
            if existing is not None:
                return existing
            self.root.mkdir(parents=True, exist_ok=True)
            target = self._file(voice.gender, voice.pitch)
            tmp = self.root / f".{target.name}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(voice.as_dict(), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            self._voices[(voice.gender, voice.pitch)] = voice
        logger.info("fixed voice %s/%s saved to %s", voice.gender, voice.pitch, target)
        return voice
