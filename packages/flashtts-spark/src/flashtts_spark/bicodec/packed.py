"""BiCodec's wave generator rearranged for a CPU: the same weights and products, laid out for oneDNN.

The released decoder is a DAC-style stack of 1-D convolutions. On a CPU, torch runs each ``Conv1d``
as a 2-D convolution over a (B, C, 1, T) tensor in the plain layout, so oneDNN reorders every input
and output to its blocked layout and back, and it runs the upsampling ``ConvTranspose1d`` layers
(stride 8/5/4/2) at a third to a half of the speed of a plain convolution. ``PackedWaveGenerator``
keeps the activations as (B, C, 1, T) tensors in the channels-last layout (time-major, channels
contiguous), which oneDNN's convolutions read and write directly and the Snake activations and
residual sums keep, and computes every transposed convolution as one ordinary convolution with
``stride`` times the output channels (one group of them per output phase: the polyphase form),
whose channels-last output already is the interleaved waveform.

The arithmetic is the float32 model's: the same weights multiply the same inputs, only the order of
the sums differs (measured: within ~1e-6 of the peak of a full-size decode, see bench/codec.py).
Built from a ``WaveGenerator`` whose weight norm is folded; the original module and its parameter
names are untouched (checkpoints still load strictly into it), so this is an inference-only view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResidualUnit, Snake1d
from .wave_generator import DecoderBlock, WaveGenerator


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class _Conv(nn.Module):
    """A ``Conv1d`` as a (1, k) convolution over channels-last (B, C, 1, T)."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("only zero-padded convolutions with explicit padding are packed")
        self.weight = nn.Parameter(_channels_last(conv.weight.detach().unsqueeze(2)), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride = (1, conv.stride[0])
        self.padding = (0, conv.padding[0])
        self.dilation = (1, conv.dilation[0])
        self.groups = conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class _Polyphase(nn.Module):
    """A ``ConvTranspose1d`` (groups 1, no dilation or output padding) as one ordinary convolution.

    Output sample ``q * s + r - padding`` of a transposed convolution with stride ``s`` and kernel
    ``K`` is ``sum_i W[:, :, i*s + r] · x[q - i]``: for each phase ``r``, a plain convolution with
    ``ceil(K / s)`` taps (missing taps are zero). The phases are stacked as output channels
    ``r * C_out + c``, so in the channels-last layout (B, 1, Q, s · C_out) the memory already is
    (B, 1, Q · s, C_out): the interleaved output, read as a (B, C_out, 1, Q · s) view without a copy.
    """

    def __init__(self, conv: nn.ConvTranspose1d):
        super().__init__()
        if conv.groups != 1 or conv.dilation[0] != 1 or conv.output_padding[0] != 0:
            raise ValueError("only plain transposed convolutions (groups 1, no dilation/output padding) are packed")
        weight = conv.weight.detach()  # (C_in, C_out, K)
        c_in, c_out, k = weight.shape
        s = conv.stride[0]
        taps = -(-k // s)
        padded = torch.zeros(c_in, c_out, taps * s, dtype=weight.dtype, device=weight.device)
        padded[:, :, :k] = weight
        # padded[ci, co, i*s + r] → phase r's tap i; correlation needs the taps reversed in time.
        phases = padded.reshape(c_in, c_out, taps, s).permute(3, 1, 0, 2).flip(-1)  # (s, C_out, C_in, taps)
        self.weight = nn.Parameter(_channels_last(phases.reshape(s * c_out, c_in, 1, taps)), requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(c_out, dtype=weight.dtype)
        self.bias = nn.Parameter(bias.repeat(s), requires_grad=False)
        self.stride = s
        self.taps = taps
        self.kernel = k
        self.crop = conv.padding[0]
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, _, length = x.shape
        y = F.conv2d(x, self.weight, self.bias, padding=(0, self.taps - 1))  # (B, s·C_out, 1, T + taps - 1)
        q = y.shape[-1]
        # channels-last memory of y is (B, 1, Q, s, C_out) = (B, 1, Q·s, C_out)
        y = y.permute(0, 2, 3, 1).reshape(batch, 1, q * self.stride, self.out_channels).permute(0, 3, 1, 2)
        out_len = (length - 1) * self.stride - 2 * self.crop + self.kernel
        return y[..., self.crop : self.crop + out_len]


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
