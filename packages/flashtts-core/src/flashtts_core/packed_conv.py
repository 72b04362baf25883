"""1-D convolutions laid out for oneDNN on a CPU: the same weights and products, channels-last.

The released vocoders (Spark's BiCodec, MegaTTS3's WaveVAE) are stacks of ``Conv1d`` and upsampling
``ConvTranspose1d`` layers. On a CPU, torch runs each ``Conv1d`` as a 2-D convolution over a
(B, C, 1, T) tensor in the plain layout, so oneDNN reorders every input and output to its blocked
layout and back, and it runs ``ConvTranspose1d`` at a third to a half of the speed of a plain
convolution. The modules here keep activations as (B, C, 1, T) tensors in the channels-last layout
(time-major, channels contiguous), which oneDNN's convolutions read and write directly, and compute
a transposed convolution as one ordinary convolution with ``stride`` times the output channels (one
group per output phase: the polyphase form), whose channels-last output already is the interleaved
signal. Only the order of the sums differs from the original layers (within ~1e-6 of the peak).

Needs torch, which flashtts-core itself does not depend on: only engines that bring torch import this.
Each module is an inference-only view built from a loaded layer (weight norm folded); the original
modules and their parameter names are untouched, so checkpoints still load strictly into them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A (B, C, 1, T) tensor in the channels-last layout (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


class PackedConv1d(nn.Module):
    """A ``Conv1d`` as a (1, k) convolution over channels-last (B, C, 1, T)."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("only zero-padded convolutions with explicit padding are packed")
        self.weight = nn.Parameter(channels_last(conv.weight.detach().unsqueeze(2)), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride = (1, conv.stride[0])
        self.padding = (0, conv.padding[0])
        self.dilation = (1, conv.dilation[0])
        self.groups = conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PolyphaseConvTranspose1d(nn.Module):
    """A ``ConvTranspose1d`` (groups 1, no dilation) as one ordinary convolution over channels-last (B, C, 1, T).

    Output sample ``q * s + r - padding`` of a transposed convolution with stride ``s`` and kernel
    ``K`` is ``sum_i W[:, :, i*s + r] · x[q - i]``: for each phase ``r``, a plain convolution with
    ``ceil(K / s)`` taps (missing taps are zero). The phases are stacked as output channels
    ``r * C_out + c``, so in the channels-last layout (B, 1, Q, s · C_out) the memory already is
    (B, 1, Q · s, C_out): the interleaved output, read as a (B, C_out, 1, Q · s) view without a copy.
    ``output_padding`` only lengthens the crop (those samples are computed like the others).
    """

    def __init__(self, conv: nn.ConvTranspose1d):
        super().__init__()
        if conv.groups != 1 or conv.dilation[0] != 1 or isinstance(conv.padding, str):
            raise ValueError("only plain transposed convolutions (groups 1, no dilation) are packed")
        weight = conv.weight.detach()  # (C_in, C_out, K)
        c_in, c_out, k = weight.shape
        s = conv.stride[0]
        taps = -(-k // s)
        crop, output_padding = int(conv.padding[0]), int(conv.output_padding[0])
        if k - crop + output_padding > taps * s:
            raise ValueError("output_padding reaches past the samples the polyphase form computes")
        padded = torch.zeros(c_in, c_out, taps * s, dtype=weight.dtype, device=weight.device)
        padded[:, :, :k] = weight
        # padded[ci, co, i*s + r] → phase r's tap i; correlation needs the taps reversed in time.
        phases = padded.reshape(c_in, c_out, taps, s).permute(3, 1, 0, 2).flip(-1)  # (s, C_out, C_in, taps)
        self.weight = nn.Parameter(channels_last(phases.reshape(s * c_out, c_in, 1, taps)), requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(c_out, dtype=weight.dtype)
        self.bias = nn.Parameter(bias.repeat(s), requires_grad=False)
        self.stride = s
        self.taps = taps
        self.kernel = k
        self.crop = crop
        self.output_padding = output_padding
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, _, length = x.shape
        y = F.conv2d(x, self.weight, self.bias, padding=(0, self.taps - 1))  # (B, s·C_out, 1, T + taps - 1)
        q = y.shape[-1]
        # channels-last memory of y is (B, 1, Q, s, C_out) = (B, 1, Q·s, C_out)
        y = y.permute(0, 2, 3, 1).reshape(batch, 1, q * self.stride, self.out_channels).permute(0, 3, 1, 2)
        out_len = (length - 1) * self.stride - 2 * self.crop + self.kernel + self.output_padding
        return y[..., self.crop : self.crop + out_len]
