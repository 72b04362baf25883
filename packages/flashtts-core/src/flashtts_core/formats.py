"""Output encoders: one instance per response, fed float32 mono PCM chunks as they are produced.

Each ``write`` returns the bytes that are ready, so a streamed response sends audio as soon as it is
encoded and the concatenation of all returned bytes is one valid file (one encoder per response,
never several files glued together).
"""

from __future__ import annotations

import io
import struct
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


class AudioEncoder(ABC):
    """Encodes one response. ``stream`` says whether the bytes leave before the audio is complete."""

    media_type: ClassVar[str] = "application/octet-stream"
    extension: ClassVar[str] = ""

    def __init__(self, sample_rate: int, *, stream: bool = False):
        self.sample_rate = sample_rate
        self.stream = stream

    @abstractmethod
    def write(self, samples: np.ndarray) -> bytes:
        """Encode a chunk; return whatever bytes are ready now (possibly empty)."""

    @abstractmethod
    def close(self) -> bytes:
        """Flush the encoder; return the remaining bytes."""


class PCMEncoder(AudioEncoder):
    """Raw 16-bit little-endian mono, no header."""

    media_type = "audio/pcm"
    extension = "pcm"

    def write(self, samples: np.ndarray) -> bytes:
        return float_to_int16(samples).tobytes()

    def close(self) -> bytes:
        return b""


class WAVEncoder(AudioEncoder):
    """16-bit PCM WAV. Streamed: sizes are 0xFFFFFFFF so players keep reading; else exact sizes."""

    media_type = "audio/wav"
    extension = "wav"

    def __init__(self, sample_rate: int, *, stream: bool = False):
        super().__init__(sample_rate, stream=stream)
        self._header_sent = False
        self._buffer = bytearray()

    def _header(self, data_size: int) -> bytes:
        riff = 0xFFFFFFFF if data_size == 0xFFFFFFFF else 36 + data_size
        return (
            b"RIFF"
            + struct.pack("<I", riff)
            + b"WAVE"
            + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, self.sample_rate, self.sample_rate * 2, 2, 16)
            + b"data"
            + struct.pack("<I", data_size)
        )

    def write(self, samples: np.ndarray) -> bytes:
        pcm = float_to_int16(samples).tobytes()
        if not self.stream:
            self._buffer += pcm
            return b""
        if not self._header_sent:
            self._header_sent = True
            return self._header(0xFFFFFFFF) + pcm
        return pcm

    def close(self) -> bytes:
        if self.stream:
            return b"" if self._header_sent else self._header(0xFFFFFFFF)
        data = bytes(self._buffer)
        self._buffer.clear()
        return self._header(len(data)) + data


class _Sink(io.RawIOBase):
    """A write-only, non-seekable sink that PyAV's muxer writes into."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:
        self.data += bytes(b)
        return len(b)

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


class AVEncoder(AudioEncoder):
    """An FFmpeg encoder and muxer (through PyAV) writing into memory as chunks arrive."""

    container: ClassVar[str]
    codec: ClassVar[str]
    rates: ClassVar[tuple[int, ...] | None] = None  # supported rates; others are resampled up
    bit_rate: ClassVar[int | None] = None
    muxer_options: ClassVar[dict[str, str]] = {}

    def __init__(self, sample_rate: int, *, stream: bool = False):
        import av

        super().__init__(sample_rate, stream=stream)
        self._sink = _Sink()
        self._out = av.open(
            self._sink, mode="w", format=self.container, buffer_size=4096, options=dict(self.muxer_options)
        )
        rate = sample_rate
        if self.rates is not None and rate not in self.rates:
            rate = min((r for r in self.rates if r >= sample_rate), default=max(self.rates))
        audio = self._out.add_stream(self.codec, rate=rate)
        assert isinstance(audio, av.audio.stream.AudioStream), audio
        self._stream = audio
        self._stream.layout = "mono"
        if self.bit_rate:
            self._stream.bit_rate = self.bit_rate
        ctx = self._stream.codec_context
        ctx.open()  # fixes frame_size and the sample format
        fmt = ctx.format.name if ctx.format else None
        self._resampler = av.AudioResampler(format=fmt, layout="mono", rate=rate, frame_size=ctx.frame_size or None)
        self._pts = 0

    def _encode(self, frame) -> None:
        for out in self._resampler.resample(frame):
            for packet in self._stream.encode(out):
                self._out.mux(packet)

    def write(self, samples: np.ndarray) -> bytes:
        import av

        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if samples.size:
            frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="flt", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.pts = self._pts
            self._pts += samples.shape[0]
            self._encode(frame)
        return self._sink.take()

    def close(self) -> bytes:
        self._encode(None)
        for packet in self._stream.encode(None):
            self._out.mux(packet)
        self._out.close()
        return self._sink.take()


class MP3Encoder(AVEncoder):
    media_type = "audio/mpeg"
    extension = "mp3"
    container = "mp3"
    codec = "libmp3lame"
    bit_rate = 64000


class OpusEncoder(AVEncoder):
    media_type = "audio/ogg"
    extension = "opus"
    container = "ogg"
    codec = "libopus"
    rates = (8000, 12000, 16000, 24000, 48000)
    muxer_options = {"page_duration": "100000"}  # 100 ms ogg pages, so a stream flows
    bit_rate = 32000


class AACEncoder(AVEncoder):
    media_type = "audio/aac"
    extension = "aac"
    container = "adts"
    codec = "aac"
    bit_rate = 64000


class FLACEncoder(AVEncoder):
    media_type = "audio/flac"
    extension = "flac"
    container = "flac"
    codec = "flac"


BUILTIN_FORMATS: dict[str, type[AudioEncoder]] = {
    "mp3": MP3Encoder,
    "opus": OpusEncoder,
    "aac": AACEncoder,
    "flac": FLACEncoder,
    "wav": WAVEncoder,
    "pcm": PCMEncoder,
}


def encode_all(fmt: type[AudioEncoder], samples: np.ndarray, sample_rate: int) -> bytes:
    """Encode a whole clip at once."""
    enc = fmt(sample_rate, stream=False)
    return enc.write(samples) + enc.close()
