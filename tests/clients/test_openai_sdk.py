"""The official ``openai`` SDK's speech calls, and its audio read as OpenAI documents it: ``pcm`` is
raw 16-bit little-endian mono at 24 kHz; the other formats carry their rate in their headers."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

openai = pytest.importorskip("openai")

TEXT = "Hi."
OPENAI_PCM_RATE = 24000
TOLERANCE_S = 0.05  # resampling edges; a wrong rate is off by a third or more


@pytest.fixture(scope="module")
def client(server):
    # No retries and a bound on each call: a slow or failing server fails the test, quickly.
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def pcm_seconds(data: bytes, rate: int) -> float:
    """Seconds of headerless 16-bit mono PCM read at ``rate``."""
    assert len(data) % 2 == 0, f"{len(data)} bytes is not whole 16-bit samples"
    samples = np.frombuffer(data, dtype="<i2")
    assert samples.size and np.any(samples), "empty or silent audio"
    return samples.size / rate


def parse_wav(data: bytes) -> tuple[int, int, int, bytes]:
    """(sample rate, channels, bits per sample, PCM data) from the RIFF header, as a player reads it.
    A streamed WAV carries 0xFFFFFFFF sizes: then its data chunk runs to the end of the bytes."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", data[:12]
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[body : body + 16])
        elif chunk_id == b"data":
            assert fmt is not None, "data chunk before the fmt chunk"
            audio_format, channels, rate, byte_rate, block_align, bits = fmt
            assert audio_format == 1, f"not integer PCM: format tag {audio_format}"
            assert block_align == channels * bits // 8 and byte_rate == rate * block_align
            end = len(data) if size == 0xFFFFFFFF else body + size
            return rate, channels, bits, data[body:end]
        pos = body + size + (size & 1)
    raise AssertionError("no data chunk")


def decoded(data: bytes) -> tuple[int, float]:
    """(sample rate, seconds) of a compressed body, decoded with PyAV."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        samples = sum(frame.samples for frame in container.decode(stream))
    return rate, samples / rate


def test_pcm_is_openai_pcm_24khz_16bit_mono(client, spoken_seconds):
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="pcm")
    assert response.response.headers["content-type"] == "audio/pcm"
    assert response.response.headers["x-sample-rate"] == str(OPENAI_PCM_RATE)
    assert pcm_seconds(response.content, OPENAI_PCM_RATE) == pytest.approx(spoken_seconds(TEXT), abs=TOLERANCE_S)


def test_streamed_pcm_is_the_same_24khz_audio(client, spoken_seconds):
    pieces = []
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="nova", input=TEXT, response_format="pcm"
    ) as response:
        for chunk in response.iter_bytes():
            pieces.append(chunk)
    assert pcm_seconds(b"".join(pieces), OPENAI_PCM_RATE) == pytest.approx(spoken_seconds(TEXT), abs=TOLERANCE_S)


def test_pcm_at_a_requested_rate(client, spoken_seconds):
    """``sample_rate`` (our extension, through the SDK's extra_body) sets the rate of pcm."""
    response = client.audio.speech.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="pcm", extra_body={"sample_rate": 16000}
    )
    assert response.response.headers["x-sample-rate"] == "16000"
    assert pcm_seconds(response.content, 16000) == pytest.approx(spoken_seconds(TEXT), abs=TOLERANCE_S)


def test_wav_header_says_24khz_16bit_mono(client, spoken_seconds):
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav")
    rate, channels, bits, data = parse_wav(response.content)
    assert (rate, channels, bits) == (OPENAI_PCM_RATE, 1, 16)
    assert pcm_seconds(data, rate) == pytest.approx(spoken_seconds(TEXT), abs=TOLERANCE_S)


def test_default_mp3_decodes_at_24khz(client, spoken_seconds):
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
    assert response.response.headers["content-type"] == "audio/mpeg"
    rate, seconds = decoded(response.content)
    # MP3 frames are 1152 samples and the encoder pads both ends: up to ~0.1 s more than the audio.
    assert rate == OPENAI_PCM_RATE
    assert spoken_seconds(TEXT) - TOLERANCE_S <= seconds <= spoken_seconds(TEXT) + 0.15
