"""DAC-style wave generator: (B, input_channel, T) features → (B, 1, T · prod(rates)) waveform."""

from __future__ import annotations

import torch
from flashtts_core.weight_norm import wn_conv1d, wn_conv_transpose1d
from torch import nn

from .blocks import ResidualUnit, Snake1d, masked


class DecoderBlock(nn.Module):
    """Snake → transposed conv upsampling by `stride` → residual units with dilation 1, 3, 9."""

    def __init__(self, input_dim: int, output_dim: int, kernel_size: int, stride: int):
        super().__init__()
        self.stride = stride
        self.block = nn.Sequential(
            Snake1d(input_dim),
            wn_conv_transpose1d(
                input_dim,
                output_dim,
                kernel_size=kernel_size,
                stride=stride,
                padding=(kernel_size - stride) // 2,
            ),
            ResidualUnit(output_dim, dilation=1),
            ResidualUnit(output_dim, dilation=3),
            ResidualUnit(output_dim, dilation=9),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        snake, upsample, *units = self.block
        x = upsample(snake(masked(x, mask)))
        if mask is not None:
            mask = mask.repeat_interleave(self.stride, dim=-1)
        for unit in units:
            x = unit(x, mask)
        return x, mask


class WaveGenerator(nn.Module):
    def __init__(
        self,
        input_channel: int,
        channels: int,
        rates: list[int],
        kernel_sizes: list[int],
        d_out: int = 1,
    ):
        super().__init__()
        layers = [wn_conv1d(input_channel, channels, kernel_size=7, padding=3)]
        for i, (kernel_size, stride) in enumerate(zip(kernel_sizes, rates)):
            layers.append(DecoderBlock(channels // 2**i, channels // 2 ** (i + 1), kernel_size, stride))
        out_dim = channels // 2 ** len(rates)
        layers += [
            Snake1d(out_dim),
            wn_conv1d(out_dim, d_out, kernel_size=7, padding=3),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)
        self.hop_length = 1
        for rate in rates:
            self.hop_length *= rate

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        first, *blocks, snake, last, tanh = self.model
        x = first(masked(x, mask))
        for block in blocks:
            x, mask = block(x, mask)
        return tanh(last(snake(masked(x, mask))))
