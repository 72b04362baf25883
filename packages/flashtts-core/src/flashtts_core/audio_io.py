"""Reference audio from bytes: decode (wav, flac, ogg, mp3, …), first channel, resample with soxr."""

from __future__ import annotations

import io
import logging

import numpy as np

from .errors import AudioDecodeError

logger = logging.getLogger("flashtts.audio")

MIN_SECONDS = 0.1
MAX_SECONDS = 60.0
SILENCE_PEAK = 1e-4


def load_audio(
    data: bytes,
    target_sr: int | None = None,
    *,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
) -> tuple[np.ndarray, int]:
    """Decode ``data`` to float32 mono (first channel), resampled to ``target_sr`` when given.

    Raises :class:`AudioDecodeError` (a 400) for empty, undecodable, too short, too long, silent or
    non-finite audio, with a message a user can act on.
    """
    if not data:
        raise AudioDecodeError("reference audio is empty")
    try:
        samples, sr = _decode_soundfile(data)
    except Exception:
        samples, sr = _decode_av(data, max_seconds)
    if samples.size == 0 or sr <= 0:
        raise AudioDecodeError("reference audio holds no samples")
    duration = samples.shape[0] / sr
    if duration > max_seconds:
        raise AudioDecodeError(f"reference audio is {duration:.1f} s long; the maximum is {max_seconds:g} s")
    if duration < min_seconds:
        raise AudioDecodeError(f"reference audio is {duration * 1000:.0f} ms long; the minimum is {min_seconds:g} s")
    if not np.all(np.isfinite(samples)):
        raise AudioDecodeError("reference audio contains NaN or infinite samples")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise AudioDecodeError("reference audio is silent")
    if target_sr is not None and target_sr != sr:
        samples = resample(samples, sr, target_sr)
        sr = target_sr
    return samples, sr


def resample(samples: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """High-quality resampling (soxr VHQ)."""
    import soxr

    if sr == target_sr:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples.astype(np.float32, copy=False), sr, target_sr, quality="VHQ").astype(np.float32)


def _decode_soundfile(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.ascontiguousarray(samples[:, 0]), int(sr)


def _decode_av(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as exc:
        raise AudioDecodeError(f"reference audio could not be decoded ({type(exc).__name__})") from None
    try:
        streams = container.streams.audio
        if not streams:
            raise AudioDecodeError("the upload holds no audio stream")
        stream = streams[0]
        sr = int(stream.codec_context.sample_rate or stream.rate or 0)
        resampler = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        total = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                arr = out.to_ndarray()
                chunks.append(arr[0].astype(np.float32, copy=True))
                total += arr.shape[1]
            if sr and total / sr > max_seconds:
                raise AudioDecodeError(f"reference audio is longer than the maximum of {max_seconds:g} s")
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray()[0].astype(np.float32, copy=True))
    except AudioDecodeError:
        raise
    except Exception as exc:
        raise AudioDecodeError(f"reference audio could not be decoded ({type(exc).__name__}: {exc})") from None
    finally:
        container.close()
    if not chunks:
        raise AudioDecodeError("reference audio holds no samples")
    return np.concatenate(chunks), sr


def mono_reference(audio: np.ndarray | None, sample_rate: int) -> np.ndarray:
    """An engine's first checks of a reference clip: present, mono, with a sample rate; as float32."""
    if audio is None or np.asarray(audio).size == 0:
        raise AudioDecodeError("reference audio is empty", param="reference_audio")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise AudioDecodeError(f"reference audio must be mono, got shape {audio.shape}", param="reference_audio")
    if sample_rate <= 0:
        raise AudioDecodeError("reference audio has no sample rate", param="reference_audio")
    return audio


def audible_reference(audio: np.ndarray, sample_rate: int, target_sr: int) -> np.ndarray:
    """A mono float32 reference clip that is finite and not silent, resampled to ``target_sr``."""
    if not np.all(np.isfinite(audio)):
        raise AudioDecodeError("reference audio contains NaN or infinite samples", param="reference_audio")
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise AudioDecodeError("reference audio is silent", param="reference_audio")
    if sample_rate != target_sr:
        audio = resample(audio, sample_rate, target_sr)
    return audio


def peak_normalize(samples: np.ndarray, peak: float = 0.95) -> np.ndarray:
    """Scale so the absolute peak is ``peak`` (only down, never amplifying noise)."""
    top = float(np.max(np.abs(samples))) if samples.size else 0.0
    if top > peak:
        samples = samples * (peak / top)
    return samples.astype(np.float32, copy=False)
