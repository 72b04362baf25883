import io

import numpy as np
import pytest
import soundfile as sf
from flashtts_core.audio_io import load_audio
from flashtts_core.errors import AudioDecodeError
from flashtts_core.formats import BUILTIN_FORMATS, encode_all


def tone(seconds=1.0, sr=44100, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def wav_bytes(samples, sr, fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt)
    return buf.getvalue()


def test_wav_stereo_is_first_channel_and_resampled():
    stereo = tone(1.0, 44100, 2)
    stereo[:, 1] = 0  # second channel silent: the first one must be the one kept
    audio, sr = load_audio(wav_bytes(stereo, 44100), 16000)
    assert sr == 16000
    assert abs(len(audio) - 16000) <= 1
    assert audio.dtype == np.float32
    assert np.max(np.abs(audio)) > 0.3


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "aac"])
def test_compressed_formats_decode(fmt):
    data = encode_all(BUILTIN_FORMATS[fmt], tone(1.0, 16000), 16000)
    audio, sr = load_audio(data, 24000)
    assert sr == 24000
    assert 0.9 * 24000 < len(audio) < 1.2 * 24000


def test_ogg_vorbis_decodes():
    data = wav_bytes(tone(0.5, 22050), 22050, fmt="OGG")
    audio, sr = load_audio(data, 16000)
    assert 0.45 * 16000 < len(audio) < 0.55 * 16000


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty"),
        (b"this is not audio at all" * 10, "could not be decoded"),
        (wav_bytes(np.zeros(16000, dtype=np.float32), 16000), "silent"),
        (wav_bytes(tone(0.001, 16000), 16000), "minimum"),
        (wav_bytes(tone(600.0, 8000), 8000), "maximum"),
    ],
)
def test_bad_reference_audio_is_a_clear_400(data, fragment):
    with pytest.raises(AudioDecodeError) as err:
        load_audio(data, 16000)
    assert fragment in err.value.message
    assert err.value.status == 400
