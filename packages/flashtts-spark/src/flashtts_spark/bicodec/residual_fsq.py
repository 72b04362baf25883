"""Residual finite scalar quantization (FSQ, arXiv:2309.15505) for the global (speaker) tokens."""

from __future__ import annotations

import torch
from torch import nn


class ResidualFSQ(nn.Module):
    """Projects `dim` to len(levels) values, quantizes each to its level grid, `num_quantizers` times
    on the residual. An index packs one code's levels in mixed radix (first level least significant)."""

    def __init__(self, levels: list[int], num_quantizers: int, dim: int):
        super().__init__()
        self.levels = list(levels)
        self.num_quantizers = num_quantizers
        self.codebook_size = 1
        for level in self.levels:
            self.codebook_size *= level
        codebook_dim = len(self.levels)
        if dim != codebook_dim:
            self.project_in = nn.Linear(dim, codebook_dim)
            self.project_out = nn.Linear(codebook_dim, dim)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Identity()
        levels_t = torch.tensor(self.levels)
        basis = torch.cumprod(torch.tensor([1] + self.levels[:-1]), dim=0)
        scales = torch.stack([(levels_t.float() - 1) ** -q for q in range(num_quantizers)])
        self.register_buffer("_levels", levels_t, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("scales", scales, persistent=False)

    def _quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Bound z to each level's range and round; result in [-1, 1]."""
        levels = self._levels
        half_l = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = (offset / half_l).atanh()
        bounded = (z + shift).tanh() * half_l - offset
        return bounded.round() / (levels // 2)

    def _codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        half = self._levels // 2
        return ((codes * half + half) * self._basis).sum(dim=-1).round().long()

    def _indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        half = self._levels // 2
        level_indices = (indices.unsqueeze(-1) // self._basis) % self._levels
        return (level_indices - half) / half

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, N) → (B, N, num_quantizers) indices."""
        residual = self.project_in(x.transpose(1, 2))
        indices = []
        for scale in self.scales:
            codes = self._quantize(residual / scale)
            indices.append(self._codes_to_indices(codes))
            residual = residual - codes * scale
        return torch.stack(indices, dim=-1)

    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, N, num_quantizers) indices → (B, dim, N)."""
        codes = self._indices_to_codes(indices)  # (B, N, Q, len(levels))
        summed = (codes * self.scales).sum(dim=2)
        return self.project_out(summed).transpose(1, 2)
