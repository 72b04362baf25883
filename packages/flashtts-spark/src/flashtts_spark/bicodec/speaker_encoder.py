"""Global (speaker) tokens: ECAPA-TDNN latent → Perceiver resampler → residual FSQ; and back to a
d-vector that conditions the decoder."""

from __future__ import annotations

import torch
from torch import nn

from .ecapa_tdnn import ECAPA_TDNN
from .perceiver import PerceiverResampler
from .residual_fsq import ResidualFSQ


class SpeakerEncoder(nn.Module):
    def __init__(
        self,
        input_dim: int = 100,
        out_dim: int = 512,
        latent_dim: int = 128,
        token_num: int = 32,
        fsq_levels: list[int] = (4, 4, 4, 4, 4, 4),
        fsq_num_quantizers: int = 1,
        ecapa_channels: int = 512,
    ):
        super().__init__()
        self.speaker_encoder = ECAPA_TDNN(feat_dim=input_dim, embed_dim=out_dim, channels=ecapa_channels)
        self.perceiver_sampler = PerceiverResampler(
            dim=latent_dim, dim_context=ecapa_channels * 3, num_latents=token_num
        )
        self.quantizer = ResidualFSQ(levels=list(fsq_levels), num_quantizers=fsq_num_quantizers, dim=latent_dim)
        self.project = nn.Linear(latent_dim * token_num, out_dim)

    def tokenize(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) → (B, token_num, fsq_num_quantizers) indices."""
        latent = self.speaker_encoder.latent(mel)
        x = self.perceiver_sampler(latent.transpose(1, 2)).transpose(1, 2)
        return self.quantizer.tokenize(x)

    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, token_num, fsq_num_quantizers) indices → d-vector (B, out_dim)."""
        zq = self.quantizer.detokenize(indices)  # (B, latent_dim, token_num), flattened channel-major
        return self.project(zq.reshape(zq.shape[0], -1))
