"""ConvNeXt (Vocos) stacks: the semantic feature encoder, the prenet and the postnet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SamplingBlock, masked


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine weights, scaled and shifted by linear maps of a condition vector."""

    def __init__(self, condition_dim: int, embedding_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dim = embedding_dim
        self.scale = nn.Linear(condition_dim, embedding_dim)
        self.shift = nn.Linear(condition_dim, embedding_dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, (self.dim,), eps=self.eps)
        return x * self.scale(condition).unsqueeze(1) + self.shift(condition).unsqueeze(1)


class ConvNeXtBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        intermediate_dim: int,
        layer_scale: float,
        condition_dim: int | None = None,
    ):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = AdaLayerNorm(condition_dim, dim) if condition_dim else nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale > 0 else None

    def forward(self, x: torch.Tensor, condition=None, mask=None) -> torch.Tensor:
        """x: (B, C, T) → (B, C, T)."""
        h = self.dwconv(masked(x, mask)).transpose(1, 2)
        h = self.norm(h, condition) if isinstance(self.norm, AdaLayerNorm) else self.norm(h)
        h = self.pwconv2(self.act(self.pwconv1(h)))
        if self.gamma is not None:
            h = self.gamma * h
        return x + h.transpose(1, 2)


class VocosBackbone(nn.Module):
    """Conv embedding + ConvNeXt blocks; takes (B, C_in, T), returns (B, T, dim)."""

    def __init__(
        self,
        input_channels: int,
        dim: int,
        intermediate_dim: int,
        num_layers: int,
        layer_scale_init_value: float | None = None,
        condition_dim: int | None = None,
    ):
        super().__init__()
        self.input_channels = input_channels
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = AdaLayerNorm(condition_dim, dim) if condition_dim else nn.LayerNorm(dim, eps=1e-6)
        layer_scale = layer_scale_init_value or 1 / num_layers
        self.convnext = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, layer_scale, condition_dim) for _ in range(num_layers)
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor, condition=None, mask=None) -> torch.Tensor:
        x = self.embed(masked(x, mask)).transpose(1, 2)
        x = self.norm(x, condition) if isinstance(self.norm, AdaLayerNorm) else self.norm(x)
        x = x.transpose(1, 2)
        for block in self.convnext:
            x = block(x, condition, mask)
        return self.final_layer_norm(x.transpose(1, 2))


def _sampling_stages(dim: int, intermediate_dim: int, ratios: list[int], upsample: bool) -> nn.Sequential:
    """One (SamplingBlock, two-layer VocosBackbone) pair per ratio."""
    stages = []
    for ratio in ratios:
        scale = {"upsample_scale": ratio} if upsample else {"downsample_scale": ratio}
        stages.append(
            nn.Sequential(
                SamplingBlock(dim, groups=dim, **scale),
                VocosBackbone(dim, dim, intermediate_dim, num_layers=2),
            )
        )
    return nn.Sequential(*stages)


def _run_stages(stages: nn.Sequential, x: torch.Tensor, mask) -> torch.Tensor:
    """(B, T, C) in, (B, T, C) out."""
    for sampler, backbone in stages:
        x = backbone(sampler(x, mask), mask=mask)
    return x


class Encoder(nn.Module):
    """Semantic feature encoder: wav2vec2 features (B, input_channels, T) → (B, out_channels, T)."""

    def __init__(
        self,
        input_channels: int,
        vocos_dim: int,
        vocos_intermediate_dim: int,
        vocos_num_layers: int,
        out_channels: int,
        sample_ratios: list[int] = (1, 1),
    ):
        super().__init__()
        self.encoder = VocosBackbone(input_channels, vocos_dim, vocos_intermediate_dim, vocos_num_layers)
        self.downsample = _sampling_stages(vocos_dim, vocos_intermediate_dim, list(sample_ratios), upsample=False)
        self.project = nn.Linear(vocos_dim, out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.encoder(x, mask=mask)
        x = _run_stages(self.downsample, x, mask)
        return self.project(x).transpose(1, 2)


class Decoder(nn.Module):
    """Prenet / postnet: (B, input_channels, T) → (B, out_channels, T), optionally AdaLN-conditioned."""

    def __init__(
        self,
        input_channels: int,
        vocos_dim: int,
        vocos_intermediate_dim: int,
        vocos_num_layers: int,
        out_channels: int,
        condition_dim: int | None = None,
        sample_ratios: list[int] = (1, 1),
        use_tanh_at_final: bool = False,
    ):
        super().__init__()
        self.linear_pre = nn.Linear(input_channels, vocos_dim)
        # Upstream calls this stack `downsample` although it upsamples; the name is in the checkpoint.
        self.downsample = _sampling_stages(vocos_dim, vocos_intermediate_dim, list(sample_ratios), upsample=True)
        self.vocos_backbone = VocosBackbone(
            vocos_dim,
            vocos_dim,
            vocos_intermediate_dim,
            vocos_num_layers,
            condition_dim=condition_dim,
        )
        self.linear = nn.Linear(vocos_dim, out_channels)
        self.use_tanh_at_final = use_tanh_at_final

    def forward(self, x: torch.Tensor, condition=None, mask=None) -> torch.Tensor:
        x = self.linear_pre(x.transpose(1, 2))
        x = _run_stages(self.downsample, x, mask).transpose(1, 2)
        x = self.vocos_backbone(x, condition=condition, mask=mask)
        x = self.linear(x).transpose(1, 2)
        return torch.tanh(x) if self.use_tanh_at_final else x
