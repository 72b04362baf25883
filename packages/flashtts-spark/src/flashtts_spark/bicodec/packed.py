"""BiCodec's wave generator rearranged for a CPU: the same weights and products, laid out for oneDNN.

The released decoder is a DAC-style stack of 1-D convolutions, upsampling by ``ConvTranspose1d``
(stride 8/5/4/2). ``PackedWaveGenerator`` keeps the activations as channels-last (B, C, 1, T)
tensors, which the Snake activations and residual sums keep too, and runs every convolution through
``flashtts_core.packed_conv`` (channels-last convolutions, the transposed ones in polyphase form).

The arithmetic is the float32 model's: the same weights multiply the same inputs, only the order of
the sums differs (measured: within ~1e-6 of the peak of a full-size decode, see bench/codec.py).
Built from a ``WaveGenerator`` whose weight norm is folded; the original module and its parameter
names are untouched (checkpoints still load strictly into it), so this is an inference-only view.
"""

from __future__ import annotations

import torch
from flashtts_core.packed_conv import PackedConv1d as _Conv
from flashtts_core.packed_conv import PolyphaseConvTranspose1d as _Polyphase
from flashtts_core.packed_conv import channels_last as _channels_last
from torch import nn

from .blocks import ResidualUnit, Snake1d
from .wave_generator import DecoderBlock, WaveGenerator


class _Snake(nn.Module):
    """``Snake1d`` over (B, C, 1, T): x + sin²(αx)/α, the same operations in the same order."""

    def __init__(self, snake: Snake1d):
        super().__init__()
        alpha = snake.alpha.detach()
        self.alpha = nn.Parameter(alpha.reshape(1, -1, 1, 1).clone(), requires_grad=False)
        self.inverse = nn.Parameter((alpha + 1e-9).reciprocal().reshape(1, -1, 1, 1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wave = torch.mul(x, self.alpha)
        wave.sin_()
        wave.mul_(wave)
        return torch.addcmul(x, wave, self.inverse)


class _Residual(nn.Module):
    def __init__(self, unit: ResidualUnit):
        super().__init__()
        snake1, conv7, snake2, conv1 = unit.block
        self.snake1, self.conv7, self.snake2, self.conv1 = _Snake(snake1), _Conv(conv7), _Snake(snake2), _Conv(conv1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        y = x if mask is None else x * mask
        return x + self.conv1(self.snake2(self.conv7(self.snake1(y))))


class _Block(nn.Module):
    def __init__(self, block: DecoderBlock):
        super().__init__()
        snake, upsample, *units = block.block
        self.snake = _Snake(snake)
        self.upsample = _Polyphase(upsample)
        self.units = nn.ModuleList(_Residual(unit) for unit in units)
        self.stride = block.stride

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None):
        x = self.upsample(self.snake(x if mask is None else x * mask))
        if mask is not None:
            mask = mask.repeat_interleave(self.stride, dim=-1)
        x = _channels_last(x)  # the crop of a batch is a strided view
        for unit in self.units:
            x = unit(x, mask)
        return x, mask


class PackedWaveGenerator(nn.Module):
    """Inference-only view of a folded ``WaveGenerator``; same call: (B, C, T), mask (B, 1, T) → (B, 1, T·hop)."""

    def __init__(self, generator: WaveGenerator):
        super().__init__()
        first, *blocks, snake, last, tanh = generator.model
        if not isinstance(tanh, nn.Tanh):
            raise ValueError("unexpected wave generator layout")
        self.first = _Conv(first)
        self.blocks = nn.ModuleList(_Block(block) for block in blocks)
        self.snake = _Snake(snake)
        self.last = _Conv(last)
        self.hop_length = generator.hop_length

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = _channels_last(x.unsqueeze(2))
        if mask is not None:
            mask = mask.unsqueeze(2)  # (B, 1, 1, T): broadcasts over channels in either layout
            x = x * mask
        x = self.first(x)
        for block in self.blocks:
            x, mask = block(x, mask)
        x = self.last(self.snake(x if mask is None else x * mask))
        return torch.tanh(x).squeeze(2).contiguous()
