"""The audio codec contract: reference audio to tokens (or latents) and tokens back to audio."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import numpy as np


class AudioCodec(ABC):
    """A neural audio codec, used in batches.

    Both methods are synchronous and batched: an engine calls them from a
    :class:`flashtts_core.batcher.DynamicBatcher`, which groups concurrent requests and runs the batch
    in a worker thread, never on the event loop.
    """

    name: ClassVar[str]
    sample_rate: ClassVar[int]

    @classmethod
    @abstractmethod
    def load(cls, path, device: str = "cpu", **options: Any) -> "AudioCodec":
        """Load the codec from a local folder."""

    def encode(self, wavs: Sequence[np.ndarray]) -> list[Any]:
        """Reference audio (float32 mono at ``sample_rate``) to the engine's tokens or latents."""
        raise NotImplementedError(f"{type(self).__name__} cannot encode audio")

    @abstractmethod
    def decode(self, tokens: Sequence[Any]) -> list[np.ndarray]:
        """Tokens to float32 mono audio at ``sample_rate``, one array per item."""
