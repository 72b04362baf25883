"""Signal-processing pieces more than one engine needs (numpy only).

``slaney_mel_filterbank`` is the mel filterbank of torchaudio's ``melscale_fbanks(norm="slaney",
mel_scale="slaney")`` and of librosa's ``filters.mel`` (Whisper's): Spark's BiCodec and Mega's aligner
both use it, and it must stay bit-for-bit what they were trained with.
"""

from __future__ import annotations

import math

import numpy as np

_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz, 15 mels per 1000 Hz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above. float64."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz_slaney(mel: np.ndarray | float) -> np.ndarray:
    """The inverse of ``hz_to_mel_slaney``. float64."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def slaney_mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> np.ndarray:
    """Triangular filters, float32 (n_freqs, n_mels), each scaled by 2 / its bandwidth (Slaney norm).

    The FFT bins run from 0 to ``sample_rate // 2`` (torchaudio's grid), the filters' edges from
    ``f_min`` to ``f_max`` evenly on the mel scale.
    """
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
