"""Small building blocks shared by the BiCodec modules.

Time-mixing modules take an optional ``mask`` of shape (B, 1, T) (1 inside an item, 0 in its right
padding). Multiplying a convolution's input by it makes every item of a padded batch see zeros past
its end, exactly as it would alone, so batched results equal one-at-a-time results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from flashtts_core.weight_norm import wn_conv1d
from torch import nn


def masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


class Snake1d(nn.Module):
    """x + sin²(αx)/α with a learned α per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two fresh tensors instead of five (sin and the square in place, the sum fused in addcmul):
        # bit-identical to x + sin(αx)² / α and ~10% of a full-size decode faster on a CPU.
        alpha = self.alpha
        wave = torch.mul(x, alpha)
        wave.sin_()
        wave.mul_(wave)
        return torch.addcmul(x, wave, (alpha + 1e-9).reciprocal())


class ResidualUnit(nn.Module):
    """Snake → dilated conv (k=7) → Snake → 1×1 conv, added to the input."""

    def __init__(self, dim: int, dilation: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim),
            wn_conv1d(dim, dim, kernel_size=7, dilation=dilation, padding=3 * dilation),
            Snake1d(dim),
            wn_conv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # Snake maps 0 to 0, so masking the input also masks the dilated conv's input.
        return x + self.block(masked(x, mask))


class SamplingBlock(nn.Module):
    """Resampling block of the feature encoder/decoder; takes (B, T, C), returns (B, C, T).

    With both scales at 1 (the released configuration) it returns three times its input, as upstream.
    """

    def __init__(
        self,
        dim: int,
        groups: int = 1,
        upsample_scale: int = 1,
        downsample_scale: int = 1,
    ):
        super().__init__()
        self.upsample_scale = upsample_scale
        self.downsample_scale = downsample_scale
        if upsample_scale > 1:
            self.de_conv_upsampler = nn.Sequential(
                nn.LeakyReLU(0.2),
                nn.ConvTranspose1d(
                    dim,
                    dim,
                    kernel_size=upsample_scale * 2,
                    stride=upsample_scale,
                    padding=upsample_scale // 2 + upsample_scale % 2,
                    output_padding=upsample_scale % 2,
                    groups=groups,
                ),
            )
        if downsample_scale > 1:
            self.conv_downsampler = nn.Sequential(
                nn.LeakyReLU(0.2),
                nn.Conv1d(
                    dim,
                    dim,
                    kernel_size=2 * downsample_scale,
                    stride=downsample_scale,
                    padding=downsample_scale // 2 + downsample_scale % 2,
                    groups=groups,
                ),
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.transpose(1, 2)
        if mask is not None and (self.upsample_scale > 1 or self.downsample_scale > 1):
            raise ValueError("padded batches need sample ratios of 1")
        if self.upsample_scale > 1:
            repeated = x.repeat_interleave(self.upsample_scale, dim=2)
            merged = repeated + self.de_conv_upsampler(x)
        else:
            repeated = merged = x
        if self.downsample_scale > 1:
            s = self.downsample_scale
            return (
                self.conv_downsampler(merged)
                + F.avg_pool1d(merged, kernel_size=s, stride=s)
                + F.avg_pool1d(repeated, kernel_size=s, stride=s)
            )
        return merged + merged + repeated
