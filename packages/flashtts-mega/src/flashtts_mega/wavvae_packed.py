"""MegaTTS3's WaveVAE decoder rearranged for a CPU: the same weights and products, laid out for oneDNN.

The decode path (``latent_upsampler`` ×4, then the HiFi-GAN-style generator: ×5·4·4·3 with three
multi-receptive-field blocks of 18 convolutions per stage) is all 1-D convolutions, upsampling by a
nearest + 7-tap branch summed with a ``ConvTranspose1d`` branch. ``PackedWaveVAE`` keeps the
activations as channels-last (B, C, 1, T) tensors and runs every convolution through
``flashtts_core.packed_conv`` (channels-last convolutions; the transposed ones in polyphase form).
The operations and their order are upstream's; only the sums inside each convolution are ordered
differently (within ~1e-6 of the peak in float32; tests/test_wavvae.py, bench/mega_modules.py wavvae).
Built from a loaded decoder (weight norm folded): an inference-only view; the released module and its
parameter names are untouched, so checkpoints still load strictly into it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from flashtts_core.packed_conv import PackedConv1d, PolyphaseConvTranspose1d, channels_last
from torch import nn

from .wavvae import LEAKY_SLOPE, Generator, ResBlockMRF, ResBlockMRFInter, Upsample, WaveVAEDecoder


def _reflect(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``ReflectionPad1d(pad)`` over the time axis of (B, C, 1, T), kept channels-last."""
    return channels_last(F.pad(x, (pad, pad, 0, 0), mode="reflect"))


class _Upsample(nn.Module):
    def __init__(self, up: Upsample):
        super().__init__()
        nearest, _, pad, conv = up.upsample
        _, trans = up.trans_upsample
        self.ratio = int(nearest.scale_factor)
        self.pad = pad.padding[0]
        self.conv = PackedConv1d(conv)
        self.trans = PolyphaseConvTranspose1d(trans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sin(x) + x
        near = F.interpolate(x, scale_factor=(1, self.ratio), mode="nearest")
        near = self.conv(_reflect(F.leaky_relu(near, LEAKY_SLOPE), self.pad))
        return channels_last(near + self.trans(F.leaky_relu(x, LEAKY_SLOPE)))


class _MRF(nn.Module):
    def __init__(self, block: ResBlockMRF):
        super().__init__()
        self.convs1 = nn.ModuleList(PackedConv1d(c) for c in block.convs1)
        self.convs2 = nn.ModuleList(PackedConv1d(c) for c in block.convs2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LEAKY_SLOPE)), LEAKY_SLOPE))
        return x


class _MRFInter(nn.Module):
    def __init__(self, block: ResBlockMRFInter):
        super().__init__()
        self.block1, self.block2, self.block3 = _MRF(block.block1), _MRF(block.block2), _MRF(block.block3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.block1(x) + self.block2(x) + self.block3(x)) / 3


class PackedWaveVAE(nn.Module):
    """The latent upsampler and the generator of a folded ``WaveVAEDecoder`` as one module; same call
    as ``generator(latent_upsampler(x))``: (B, C, T) → (B, num_band, T · hop)."""

    def __init__(self, latent_upsampler: Upsample, generator: Generator):
        super().__init__()
        pad, first, *stages, act, pad_out, last, out = generator.model_up
        if not (isinstance(pad, nn.ReflectionPad1d) and isinstance(act, nn.LeakyReLU) and len(stages) % 2 == 0):
            raise ValueError("unexpected WaveVAE generator layout")
        self.latent_upsampler = _Upsample(latent_upsampler)
        self.pad = pad.padding[0]
        self.first = PackedConv1d(first)
        self.stages = nn.ModuleList(_Upsample(m) if isinstance(m, Upsample) else _MRFInter(m) for m in stages)
        self.pad_out = pad_out.padding[0]
        self.last = PackedConv1d(last)
        self.out = None if isinstance(out, nn.Tanh) else PackedConv1d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.latent_upsampler(channels_last(x.unsqueeze(2)))
        x = self.first(_reflect(x, self.pad))
        for stage in self.stages:
            x = stage(x)
        x = self.last(_reflect(F.leaky_relu(x, LEAKY_SLOPE), self.pad_out))
        x = torch.tanh(x) if self.out is None else self.out(x)
        return x.squeeze(2)


def pack_wavvae(decoder: WaveVAEDecoder) -> bool:
    """Make ``decoder.decode`` run through :class:`PackedWaveVAE` (its latent upsampler and generator
    replaced by the packed view). False when it already does."""
    if isinstance(decoder.decoder, PackedWaveVAE):
        return False
    decoder.decoder = PackedWaveVAE(decoder.latent_upsampler, decoder.decoder)  # type: ignore[assignment]
    decoder.latent_upsampler = nn.Identity()  # type: ignore[assignment]
    return True
