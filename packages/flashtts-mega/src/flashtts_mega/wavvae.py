"""MegaTTS3's WaveVAE decoder: 25 Hz, 32-channel latents → 24 kHz waveform (×960).

Only the decoder was released (upstream tts/modules/wavvae/decoder/wavvae_v3.py, the decode path:
``proj_to_decoder`` → ``latent_upsampler`` (×4) → a HiFi-GAN-style ``decoder`` with upsampling
ratios 5·4·4·3 and multi-receptive-field residual blocks). Parameter names and shapes follow upstream;
the convolutions carry old-style weight norm (``weight_g`` / ``weight_v``) as the checkpoint stores it,
folded into plain weights after a strict load.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from flashtts_core.weight_norm import fold_weight_norms, weight_norm, wn_conv1d
from torch import nn

from .checkpoint import (
    build_checked,
    build_for_loading,
    load_strict,
    million_parameters,
    ready_for_inference,
)
from .config import WaveVAEConfig

logger = logging.getLogger("flashtts.mega")

CHECKPOINT, INNER_KEY = WaveVAEConfig.CHECKPOINT, WaveVAEConfig.INNER_KEY  # upstream's file and key names

# Left context that makes a decode from a later frame equal the whole decode's samples there: the
# decoder's receptive field reaches 5.6 latent frames back (measured), plus the edge's reflection pad.
CONTEXT_FRAMES = 8
LEAKY_SLOPE = 0.2


class Upsample(nn.Module):
    """×r by two summed branches: nearest + 7-tap conv, and a transposed conv; channels halve."""

    def __init__(self, channels: int, r: int):
        super().__init__()
        kernel = max(r, 5)
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=r, mode="nearest"),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.ReflectionPad1d(3),
            wn_conv1d(channels, channels // 2, kernel_size=7),
        )
        self.trans_upsample = nn.Sequential(
            nn.LeakyReLU(LEAKY_SLOPE),
            weight_norm(
                nn.ConvTranspose1d(
                    channels,
                    channels // 2,
                    kernel_size=2 * kernel,
                    stride=r,
                    padding=kernel - r // 2,
                    output_padding=r % 2,
                )
            ),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sin(x) + x
        return self.upsample(x) + self.trans_upsample(x)


class ResBlockMRF(nn.Module):
    """Three (dilated conv → conv) residual pairs of one kernel size (upstream ``ResBlockMRFV2``)."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList(
            wn_conv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size - 1) * d // 2) for d in dilation
        )
        self.convs2 = nn.ModuleList(
            wn_conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LEAKY_SLOPE)), LEAKY_SLOPE))
        return x


class ResBlockMRFInter(nn.Module):
    """The mean of kernel-3, -7 and -11 residual blocks (upstream ``ResBlockMRFV2Inter``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block1 = ResBlockMRF(channels, 3)
        self.block2 = ResBlockMRF(channels, 7)
        self.block3 = ResBlockMRF(channels, 11)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.block1(x) + self.block2(x) + self.block3(x)) / 3


class Generator(nn.Module):
    """Upstream's ``Generator``: a 7-tap input conv, then (Upsample, MRF block) per ratio, then out."""

    def __init__(
        self,
        input_size: int = 160,
        ngf: int = 128,
        ratios: tuple[int, ...] = (5, 4, 4, 3),
        num_band: int = 1,
        use_tanh: bool = False,
    ):
        super().__init__()
        mult = 2 ** len(ratios)
        layers: list[nn.Module] = [nn.ReflectionPad1d(3), wn_conv1d(input_size, mult * ngf, kernel_size=7)]
        for r in ratios:
            layers += [Upsample(mult * ngf, r), ResBlockMRFInter(mult * ngf // 2)]
            mult //= 2
        layers += [
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.ReflectionPad1d(3),
            wn_conv1d(ngf, num_band, kernel_size=7),
            nn.Tanh() if use_tanh else nn.Conv1d(num_band, num_band, 1),
        ]
        self.model_up = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model_up(x)


class WaveVAEDecoder(nn.Module):
    """Latents [B, T, 32] at 25 Hz → waveform [B, T·960] at 24 kHz (upstream sizes by default, as
    :class:`config.WaveVAEConfig`'s)."""

    def __init__(
        self,
        latent_dim: int = 32,
        decoder_dim: int = 320,
        latent_upsample: int = 4,
        ngf: int = 128,
        ratios: tuple[int, ...] = (5, 4, 4, 3),
        num_band: int = 1,
        use_tanh: bool = False,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.hop_length = latent_upsample * math.prod(ratios)
        self.proj_to_decoder = nn.Linear(latent_dim, decoder_dim)
        self.latent_upsampler = Upsample(decoder_dim, latent_upsample)
        self.decoder = Generator(decoder_dim // 2, ngf, tuple(ratios), num_band, use_tanh)

    @property
    def dtype(self) -> torch.dtype:
        return self.proj_to_decoder.weight.dtype

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor, start: int = 0) -> torch.Tensor:
        """[B, T, latent_dim] → float32 [B, (T − start)·hop_length] (hop_length 960 as released).

        ``start`` > 0 returns only the audio from latent frame ``start`` on (e.g. past the reference
        prompt, which upstream decodes and then cuts off). Frames before it serve as context only,
        and only the last CONTEXT_FRAMES of them reach the decoder: the same samples for less work.
        """
        if latent.dim() != 3 or latent.size(2) != self.latent_dim:
            raise ValueError(f"latent must be [B, T, {self.latent_dim}], got {tuple(latent.shape)}")
        if not 0 <= start < latent.size(1):
            raise ValueError(f"start {start} is outside the latent's {latent.size(1)} frames")
        context = min(start, CONTEXT_FRAMES)
        latent = latent[:, start - context :]
        x = self.proj_to_decoder(latent.to(self.proj_to_decoder.weight.device, self.dtype)).transpose(1, 2)
        return self.decoder(self.latent_upsampler(x))[:, 0, context * self.hop_length :].float()

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: WaveVAEConfig) -> WaveVAEDecoder:
        return build_checked(cls, config.model_kwargs(), "WaveVAE decoder")

    @classmethod
    def from_checkpoint(
        cls, folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> WaveVAEDecoder:
        """wavvae/{config.yaml, decoder.ckpt} (inner key ``model_gen``): strict load, weight norm folded."""
        start = time.perf_counter()
        config, file, state_dict = WaveVAEConfig.read(folder)
        model = build_for_loading(lambda: cls.from_config(config), state_dict)
        load_strict(model, state_dict, f"WaveVAE decoder checkpoint {file}")
        folded = fold_weight_norms(model)
        model = ready_for_inference(model, device, dtype)
        logger.info(
            "WaveVAE decoder loaded from %s: %.1fM parameters, %d weight-norm layers folded, ×%d, on %s, %s, in %.1f s",
            file,
            million_parameters(model),
            folded,
            model.hop_length,
            device,
            dtype,
            time.perf_counter() - start,
        )
        return model
