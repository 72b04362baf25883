"""The engine contract: one TTS model family from model directory to audio chunks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, ClassVar, Optional

import numpy as np

from .backend import BackendConfig, LLMBackend
from .errors import InvalidRequest, NotFound, UnsupportedCapability
from .options import EngineOptions
from .request import SynthesisRequest, VoiceReference
from .sampling import SamplingParams

# What Engine.load is given: an async callable that builds the chosen backend from a config.
BackendFactory = Callable[[BackendConfig], Awaitable[LLMBackend]]


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; routes answer 400 for anything it cannot."""

    clone: bool = False
    reference_text: bool = False  # cloning uses the reference transcript
    latent: bool = False  # cloning takes a precomputed latent file (MegaTTS3)
    named_voices: bool = False
    pitch_speed: bool = False
    speed: bool = False  # speed control without pitch (MegaTTS3: the duration model's length scale)
    multi_speaker: bool = True
    streaming: bool = True

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


class Engine(ABC):
    """A TTS model family.

    Class-level: ``name``, ``detect(path)``, ``write_tiny_model(path)`` and the async ``load``.
    Instance-level: ``capabilities``, ``sample_rate``, ``voices``, ``languages``, ``default_sampling``,
    ``prepare_reference`` (compute a clone voice's tokens/latents once) and ``synthesize``, an async
    iterator of float32 mono audio chunks. A non-stream response is the same iterator drained, so
    there is one synthesis path.

    Word timings are optional: when ``request.word_timings`` is a list, an engine that knows where its
    words fall in its audio (MegaTTS3: from its phone durations) appends a ``request.WordTiming`` per
    word, in seconds from the start of the request's audio, before yielding the chunk that holds the
    word's end. An engine that does not know leaves the list empty; callers (the realtime session)
    then estimate them from each segment's measured span.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    default_role_dir: ClassVar[str] = "data/roles"

    capabilities: Capabilities = Capabilities()
    sample_rate: int = 16000
    voices: list[str] = []
    # ISO 639-1 codes of the languages the model speaks (Wyoming's voice list tells Home Assistant); [] unknown.
    languages: list[str] = []
    default_sampling: SamplingParams = SamplingParams()
    model_path: Optional[Path] = None
    backend_name: Optional[str] = None

    # -- class-level ------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """True when ``path`` is a model directory of this engine (look at its layout only)."""

    @classmethod
    def write_tiny_model(cls, path: Path) -> None:
        """Write a tiny randomly initialised checkpoint in the exact upstream layout (noise audio)."""
        raise NotImplementedError(f"engine {cls.name!r} has no tiny model")

    @classmethod
    @abstractmethod
    async def load(cls, options: EngineOptions, create_backend: BackendFactory) -> "Engine":
        """Load the model from ``options.model_path``.

        ``create_backend(config)`` is an async callable that builds the chosen LLM backend for an LLM
        folder. Heavy work runs in threads (``asyncio.to_thread``) and logs progress.
        """

    # -- instance-level ---------------------------------------------------------------------------
    async def prepare_reference(self, reference: VoiceReference) -> VoiceReference:
        """Fill ``reference.features`` (tokens or latents) from its audio; roles keep the result."""
        raise UnsupportedCapability(f"engine {self.name!r} does not support voice cloning")

    @abstractmethod
    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[np.ndarray]:
        """Yield float32 mono chunks at ``sample_rate``. Closing the iterator stops generation."""

    async def close(self) -> None:
        """Free the model and its backend."""

    def info(self) -> dict:
        return {
            "engine": self.name,
            "sample_rate": self.sample_rate,
            "voices": list(self.voices),
            "capabilities": self.capabilities.as_dict(),
        }

    # -- shared checks ----------------------------------------------------------------------------
    def check_options(self, request: SynthesisRequest) -> None:
        """Refuse a request field of a plugin's options when neither this engine nor its backend owns
        it (``time_step`` is MegaTTS3's: other engines answer 400 rather than ignore it)."""
        loaded = {self.name, self.backend_name}
        taken = {name for owner, values in request.options.items() if owner in loaded for name in values}
        for owner, values in request.options.items():
            for name in values:
                if owner not in loaded and name not in taken:
                    raise UnsupportedCapability(
                        f"engine {self.name!r} does not take {name} (an option of {owner!r})", param=name
                    )

    def check_request(self, request: SynthesisRequest) -> None:
        """Refuse what this engine cannot do, with a 4xx naming the problem."""
        caps = self.capabilities
        if request.reference is not None and not caps.clone:
            raise UnsupportedCapability(f"engine {self.name!r} does not support voice cloning", param="voice")
        if request.pitch is not None and not caps.pitch_speed:
            what = "pitch control" if caps.speed else "pitch or speed control"
            raise UnsupportedCapability(f"engine {self.name!r} has no {what}", param="pitch")
        if request.speed is not None and not (caps.pitch_speed or caps.speed):
            raise UnsupportedCapability(f"engine {self.name!r} has no pitch or speed control", param="speed")
        self.check_options(request)
        if request.reference is None:
            if request.voice is None:
                if not self.voices:
                    raise InvalidRequest("a reference voice is required for this engine", param="voice")
            elif request.voice not in self.voices:
                known = ", ".join(self.voices) or "none"
                raise NotFound(f"unknown voice {request.voice!r}; built-in voices: {known}", param="voice")
