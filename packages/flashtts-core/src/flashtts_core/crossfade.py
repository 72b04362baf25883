"""Joining audio chunks without clicks."""

from __future__ import annotations

import numpy as np


def linear_crossfade(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Blend two equally long overlapping pieces: ``tail`` fades out while ``head`` fades in."""
    n = min(len(tail), len(head))
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    return (tail[:n] * (1.0 - ramp) + head[:n] * ramp).astype(np.float32)


class StreamJoiner:
    """Joins successive chunks whose first ``overlap`` samples repeat the previous chunk's last ones.

    ``push`` returns audio that is final: each chunk's last ``overlap`` samples are held back until
    the next chunk arrives to be crossfaded with its head; ``flush`` returns the held tail.
    """

    def __init__(self, overlap: int):
        self.overlap = max(0, overlap)
        self._tail: np.ndarray | None = None

    def push(self, chunk: np.ndarray, overlapping: bool = True) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32)
        out = []
        if self._tail is not None:
            if overlapping and self.overlap and len(chunk) >= len(self._tail):
                n = len(self._tail)
                out.append(linear_crossfade(self._tail, chunk[:n]))
                chunk = chunk[n:]
            else:
                out.append(self._tail)
            self._tail = None
        keep = min(self.overlap, len(chunk))
        if keep:
            self._tail = chunk[len(chunk) - keep :]
            chunk = chunk[: len(chunk) - keep]
        out.append(chunk)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        tail, self._tail = self._tail, None
        return tail if tail is not None else np.zeros(0, dtype=np.float32)


def fade_edges(samples: np.ndarray, n: int) -> np.ndarray:
    """Short fade-in and fade-out so separately generated segments join without a click."""
    samples = np.array(samples, dtype=np.float32, copy=True)
    n = min(n, len(samples) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        samples[:n] *= ramp
        samples[-n:] *= ramp[::-1]
    return samples


def silence(seconds: float, sample_rate: int) -> np.ndarray:
    return np.zeros(int(round(seconds * sample_rate)), dtype=np.float32)
