"""Factorized VQ for the semantic tokens: project to a small code space, pick the nearest code by
cosine similarity (L2-normalised vectors), project back."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from flashtts_core.weight_norm import wn_conv1d
from torch import nn


class FactorizedVectorQuantize(nn.Module):
    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int, **training_options):
        # training_options (commitment, codebook_loss_weight, use_l2_normlize, ...) only matter for training.
        super().__init__()
        self.input_dim = input_dim
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        if input_dim != codebook_dim:
            self.in_project = wn_conv1d(input_dim, codebook_dim, kernel_size=1)
            self.out_project = wn_conv1d(codebook_dim, input_dim, kernel_size=1)
        else:
            self.in_project = nn.Identity()
            self.out_project = nn.Identity()
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        # Training-time usage statistics; kept because the checkpoint holds it.
        self.register_buffer("cluster_size", torch.zeros(codebook_size))

    def tokenize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, input_dim, T) → (B, T) code indices."""
        latents = self.in_project(z)
        b, d, t = latents.shape
        enc = F.normalize(latents.transpose(1, 2).reshape(b * t, d))
        codebook = F.normalize(self.codebook.weight)
        # Same squared-distance expression as upstream so near-ties resolve the same way.
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ codebook.t() + codebook.pow(2).sum(1)[None]
        return (-dist).argmax(dim=1).reshape(b, t)

    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, T) code indices → (B, input_dim, T)."""
        return self.out_project(self.codebook(indices).transpose(1, 2))
