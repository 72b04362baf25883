"""The one request type that carries a synthesis from any route to any engine."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .errors import InvalidRequest
from .sampling import SamplingOverrides
from .speaking_rate import BoundReport


class Level(str, enum.Enum):
    """Pitch and speed levels, as Spark-TTS's control labels (0..4)."""

    very_low = "very_low"
    low = "low"
    moderate = "moderate"
    high = "high"
    very_high = "very_high"

    @classmethod
    def _missing_(cls, value: object) -> "Level | None":
        # " HIGH " is high: in JSON and form fields as in <role:...,pitch:HIGH> tags.
        if isinstance(value, str):
            value = value.strip().lower()
            for level in cls:
                if level.value == value:
                    return level
        return None

    @property
    def rank(self) -> int:
        """0 (very_low) … 4 (very_high): the level's place in the scale."""
        return list(Level).index(self)

    @property
    def index(self) -> int:  # type: ignore[override]
        """The same as :attr:`rank` (the name earlier plugins use; it hides ``str.index``)."""
        return self.rank

    @classmethod
    def parse(cls, value: "str | Level | None", param: str) -> "Level | None":
        if value is None or isinstance(value, Level):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            choices = ", ".join(level.value for level in cls)
            raise InvalidRequest(f"invalid {param} {value!r}; choose one of: {choices}", param=param) from None

    @classmethod
    def from_ratio(cls, value: float) -> "Level":
        """Map an OpenAI-style float (1.0 = normal) onto a level."""
        if value <= 0.5:
            return cls.very_low
        if value < 1.0:
            return cls.low
        if value < 2.0:
            return cls.moderate
        if value < 3.0:
            return cls.high
        return cls.very_high


@dataclass
class VoiceReference:
    """A voice to clone: reference audio, its transcript, and what the engine computed from it.

    ``features`` holds the engine's cached tokens or latents (numpy arrays only, so they can be stored
    safely); a saved role keeps them so they are computed once. ``latent`` is a precomputed latent the
    client sent with the audio (MegaTTS3's WaveVAE encoder was never released): source data like the
    audio itself, kept with a role and never recomputed.
    """

    audio: Optional[np.ndarray] = None  # float32 mono
    sample_rate: int = 0
    text: Optional[str] = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    name: Optional[str] = None  # the role's name when it is a saved role
    latent: Optional[np.ndarray] = None  # float32, as the client sent it (MegaTTS3: [1, T, 32] at 25 Hz)


@dataclass(frozen=True)
class WordTiming:
    """Where one word of a synthesis is in its audio: seconds from the start of the request's audio.

    ``word`` is the word as the engine spoke it (after its text normalisation: ``$3`` may be ``three
    dollars``). ``exact`` is false when the engine had to guess which of its units belong to the word.
    """

    word: str
    start: float
    end: float
    exact: bool = True


@dataclass
class SynthesisRequest:
    """One synthesis: text plus either a built-in ``voice`` or a ``reference`` to clone."""

    text: str
    voice: Optional[str] = None
    reference: Optional[VoiceReference] = None
    pitch: Optional[Level] = None
    speed: Optional[Level] = None
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)
    length_threshold: int = 50
    window_size: int = 50
    stream: bool = False
    instructions: Optional[str] = None
    # The fields of plugins' own options this request set, by owner (an engine's or backend's name):
    # {"mega": {"time_step": 8}}. The owner reads them with ``MyOptions.of(options, request)``.
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The speaking-rate bound's scale (speaking_rate.py; the runtime sets it from --speaking_rate_bound,
    # 0 turns the bound off) and what the bound did to this request.
    speaking_rate_bound: float = 1.0
    bound_report: BoundReport = field(default_factory=BoundReport)
    # Word timings, when the caller wants them: a list the engine appends a WordTiming to for every word
    # it speaks, before it yields the audio that holds the word (None: not wanted, no work spent on them).
    # Engines that do not know where their words are leave it as it is (the caller estimates).
    word_timings: Optional[list[WordTiming]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise InvalidRequest("text must not be empty", param="text")
        self.pitch = Level.parse(self.pitch, "pitch")
        self.speed = Level.parse(self.speed, "speed")
        if self.length_threshold < 1:
            raise InvalidRequest("length_threshold must be >= 1", param="length_threshold")
        if self.window_size < 1:
            raise InvalidRequest("window_size must be >= 1", param="window_size")
        if not self.bound_report.request_id:
            self.bound_report.request_id = self.request_id
