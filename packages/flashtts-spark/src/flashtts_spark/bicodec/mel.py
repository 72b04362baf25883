"""Magnitude mel spectrogram as upstream configures torchaudio's MelSpectrogram: power 1, Slaney mel
scale and Slaney area normalisation (``flashtts_core.dsp.slaney_mel_filterbank``), centred frames with
reflect padding, no log.

The submodule and buffer names (`spectrogram.window`, `mel_scale.fb`) are torchaudio's, because the
released checkpoint stores both buffers.
"""

from __future__ import annotations

import numpy as np
import torch
from flashtts_core.dsp import slaney_mel_filterbank
from torch import nn


class _Spectrogram(nn.Module):
    def __init__(self, win_length: int):
        super().__init__()
        self.register_buffer("window", torch.hann_window(win_length))


class _MelScale(nn.Module):
    def __init__(self, fb: np.ndarray):
        super().__init__()
        self.register_buffer("fb", torch.from_numpy(fb))


class MelSpectrogram(nn.Module):
    """(B, samples) → (B, n_mels, samples // hop_length + 1)."""

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        win_length: int,
        hop_length: int,
        mel_fmin: float = 0.0,
        mel_fmax: float | None = None,
        num_mels: int = 128,
    ):
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        f_max = mel_fmax if mel_fmax is not None else sample_rate // 2
        self.spectrogram = _Spectrogram(win_length)
        self.mel_scale = _MelScale(slaney_mel_filterbank(n_fft // 2 + 1, mel_fmin, f_max, num_mels, sample_rate))

    @classmethod
    def from_config(cls, mel_params: dict) -> MelSpectrogram:
        return cls(**mel_params)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            wav,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.spectrogram.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        ).abs()
        return torch.matmul(spec.transpose(-1, -2), self.mel_scale.fb).transpose(-1, -2)
