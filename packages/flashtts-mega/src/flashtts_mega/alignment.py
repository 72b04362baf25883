"""A reference's alignment, as the aligner writes it and the duration model and DiT read it.

Phones are numbered from 1 in a frame → phone map (``mel2ph``, 0 = no phone); frames are 10 ms mel
frames, four to a WaveVAE latent frame. ``length_regulate`` turns durations into such a map (upstream's
``LengthRegulator``), ``mel2token_to_dur`` back into durations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# mel frames per WaveVAE latent frame (100 Hz / 25 Hz; the DiT's two stride-2 convolutions in ling_pre_net)
LATENT_STRIDE = 4


def mel2token_to_dur(mel2ph: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Frame → phone map [B, F] (1-based, 0 = none) → frames per phone [B, n_tokens]."""
    dur = mel2ph.new_zeros(mel2ph.shape[0], n_tokens + 1).scatter_add(1, mel2ph, torch.ones_like(mel2ph))
    return dur[:, 1:]


def length_regulate(dur: torch.Tensor) -> torch.Tensor:
    """Durations [1, N] → frame → phone map [1, sum(dur)] (1-based), upstream's LengthRegulator."""
    d = torch.round(dur.reshape(-1).float()).long().clamp_min(0)
    return torch.repeat_interleave(torch.arange(1, d.numel() + 1, device=d.device), d)[None]


@dataclass(frozen=True)
class ReferenceAlignment:
    """The aligner's reading of a reference: phone ids, tone ids [1, N] and frame → phone (1-based) [1, F]."""

    ph: torch.Tensor
    tone: torch.Tensor
    mel2ph: torch.Tensor

    @property
    def frames(self) -> int:
        """Mel frames (10 ms) covered; a multiple of 8."""
        return int(self.mel2ph.shape[1])

    @property
    def latent_frames(self) -> int:
        """WaveVAE latent frames (25 Hz) of the reference upstream keeps: the latent is cut to this."""
        return self.frames // LATENT_STRIDE

    def to_arrays(self) -> dict[str, np.ndarray]:
        """int64 arrays for saving (np.save, no pickling)."""
        return {k: getattr(self, k).cpu().numpy().astype(np.int64) for k in ("ph", "tone", "mel2ph")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ReferenceAlignment:
        """The inverse of ``to_arrays``; a ValueError when the arrays do not form an alignment."""
        try:
            ph, tone, mel2ph = (
                torch.as_tensor(np.asarray(arrays[k]), dtype=torch.long) for k in ("ph", "tone", "mel2ph")
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an alignment: {exc}") from exc
        n = ph.shape[-1] if ph.dim() == 2 else -1
        if not (
            ph.dim() == tone.dim() == mel2ph.dim() == 2
            and ph.shape == tone.shape
            and ph.shape[0] == mel2ph.shape[0] == 1
            and n > 0
            and mel2ph.shape[1] > 0
            and int(mel2ph.min()) >= 1
            and int(mel2ph.max()) <= n
            and bool((mel2ph[:, 1:] >= mel2ph[:, :-1]).all())
        ):
            raise ValueError("not an alignment: ph/tone must be [1, N], mel2ph [1, F] non-decreasing in 1..N")
        return cls(ph, tone, mel2ph)
