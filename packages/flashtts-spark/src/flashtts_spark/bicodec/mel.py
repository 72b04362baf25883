"""Magnitude mel spectrogram as upstream configures torchaudio's MelSpectrogram: power 1, Slaney mel
scale and Slaney area normalisation, centred frames with reflect padding, no log.

The submodule and buffer names (`spectrogram.window`, `mel_scale.fb`) are torchaudio's, because the
released checkpoint stores both buffers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz, 15 mels per 1000 Hz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def slaney_mel_filterbank(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int
) -> np.ndarray:
    """Triangular filters, (n_freqs, n_mels), each scaled by 2 / its bandwidth (Slaney norm)."""
    all_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    mel_pts = np.linspace(hz_to_mel_slaney(f_min), hz_to_mel_slaney(f_max), n_mels + 2)
    f_pts = mel_to_hz_slaney(mel_pts)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    fb *= 2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])
    return fb.astype(np.float32)


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
        self.mel_scale = _MelScale(
            slaney_mel_filterbank(
                n_fft // 2 + 1, mel_fmin, f_max, num_mels, sample_rate
            )
        )

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
