import io
import struct

import av
import numpy as np
import pytest
from flashtts_core.formats import BUILTIN_FORMATS


def sine(n, sr=16000):
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)


@pytest.mark.parametrize("name", ["mp3", "opus", "aac", "flac", "wav"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("sr", [16000, 24000])
def test_incremental_encoding_is_one_valid_file(name, stream, sr):
    enc = BUILTIN_FORMATS[name](sr, stream=stream)
    x = sine(sr * 2, sr)
    parts = [enc.write(x[i : i + sr // 10]) for i in range(0, len(x), sr // 10)]
    parts.append(enc.close())
    if stream and name != "opus":
        assert sum(1 for p in parts[: len(parts) // 2] if p) > 0, "a stream must produce bytes before the end"
    with av.open(io.BytesIO(b"".join(parts))) as container:
        s = container.streams.audio[0]
        decoded = sum(f.samples for f in container.decode(s))
        rate = s.rate
    expected_rate = 48000 if name == "opus" else sr
    assert rate == expected_rate
    assert abs(decoded / rate - 2.0) < 0.15


def test_opus_stream_flows_before_the_end():
    enc = BUILTIN_FORMATS["opus"](16000, stream=True)
    x = sine(32000)
    parts = [enc.write(x[i : i + 1600]) for i in range(0, len(x), 1600)]
    assert sum(1 for p in parts if p) >= 10


def test_streamed_wav_carries_unknown_sizes():
    enc = BUILTIN_FORMATS["wav"](16000, stream=True)
    head = enc.write(sine(1600))
    assert head[:4] == b"RIFF" and struct.unpack("<I", head[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", head[40:44])[0] == 0xFFFFFFFF


def test_wav_non_stream_has_exact_sizes_and_pcm_is_raw():
    enc = BUILTIN_FORMATS["wav"](24000)
    data = enc.write(sine(2400)) + enc.close()
    assert struct.unpack("<I", data[40:44])[0] == 4800 and len(data) == 44 + 4800
    pcm = BUILTIN_FORMATS["pcm"](24000)
    raw = pcm.write(np.array([0.0, 1.0, -1.0, 2.0], dtype=np.float32)) + pcm.close()
    assert np.frombuffer(raw, "<i2").tolist() == [0, 32767, -32767, 32767]
