"""livekit-plugins-flashtts (LiveKit Agents' plugin written for FlashTTS's ``/speak``), driven as
LiveKit's default ``tts_node`` drives a streaming TTS: ``tts.stream()``, text pushed in, input ended,
``SynthesizedAudio`` frames read out.

With its defaults the plugin posts pcm to ``{base_url}/speak`` with ``"sample_rate": 16000`` and
labels the bytes it gets 16 kHz 16-bit mono; it sends ``Authorization: Bearer None`` without a key,
``max_tokens: 32768``, ``length_threshold: 1000000`` and its own settings (base_url, api_key,
extra_headers) in the body. The plugin needs osc-data 0.2.2: later releases lack the text-normaliser
files it loads.
"""

from __future__ import annotations

import asyncio
import json

import pytest

flashtts_plugin = pytest.importorskip("livekit.plugins.flashtts")
aiohttp = pytest.importorskip("aiohttp")

TEXT = "Hi."
TOLERANCE_S = 0.05  # resampling edges; a wrong rate is off by a third or more


class RecordingSession:
    """An aiohttp session (the plugin takes one) that keeps each request's headers and body and each
    response's headers, through aiohttp's own tracing hooks."""

    def __init__(self):
        self.requests: list[dict] = []
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._start)
        trace.on_request_chunk_sent.append(self._chunk)
        trace.on_request_end.append(self._end)
        self.session = aiohttp.ClientSession(trace_configs=[trace])

    async def _start(self, session, ctx, params):
        self.requests.append({"url": str(params.url), "headers": params.headers.copy(), "body": b""})

    async def _chunk(self, session, ctx, params):
        self.requests[-1]["body"] += params.chunk

    async def _end(self, session, ctx, params):
        self.requests[-1]["response_headers"] = params.response.headers.copy()


async def synthesize(tts, text: str) -> list:
    """What ``Agent.default.tts_node`` does with a streaming TTS: the frames of ``tts.stream()``."""
    frames = []
    async with tts.stream() as stream:
        stream.push_text(text)
        stream.end_input()
        async for event in stream:
            frames.append(event.frame)
    return frames


def check_frames(frames, rate: int) -> float:
    """Every frame 16-bit mono at ``rate``; the seconds they hold."""
    assert frames, "no audio frames"
    for frame in frames:
        assert (frame.sample_rate, frame.num_channels) == (rate, 1)
        assert frame.data.format == "h" and len(frame.data) == frame.samples_per_channel
    return sum(frame.samples_per_channel for frame in frames) / rate


@pytest.fixture
def no_key_in_env(monkeypatch):
    # The plugin reads these when base_url/api_key are not given.
    monkeypatch.delenv("FLASHTTS_API_KEY", raising=False)
    monkeypatch.delenv("FLASHTTS_BASE_URL", raising=False)


async def test_defaults_give_16khz_pcm_of_the_right_length(server, spoken_seconds, no_key_in_env):
    recorder = RecordingSession()
    tts = flashtts_plugin.TTS(base_url=server.url, http_session=recorder.session)
    try:
        frames = await asyncio.wait_for(synthesize(tts, TEXT), timeout=60)
    finally:
        await tts.aclose()
        await recorder.session.close()

    assert check_frames(frames, 16000) == pytest.approx(spoken_seconds(TEXT), abs=TOLERANCE_S)
    # The request is the plugin's documented default, so the test covers what users send.
    [request] = recorder.requests
    assert request["url"] == f"{server.url}/speak"
    assert request["headers"]["Authorization"] == "Bearer None"
    assert json.loads(request["body"]) == {
        "name": "female",
        "pitch": None,
        "speed": None,
        "temperature": 0.9,
        "top_k": 50,
        "top_p": 0.95,
        "repetition_penalty": 1.0,
        "max_tokens": 32768,
        "length_threshold": 1000000,
        "window_size": 100000,
        "stream": True,
        "response_format": "pcm",
        "base_url": server.url,
        "api_key": None,
        "sample_rate": 16000,
        "extra_headers": {},
        "text": TEXT,
    }
    assert request["response_headers"]["x-sample-rate"] == "16000"


async def test_a_24khz_plugin_gets_24khz_pcm(server, spoken_seconds, no_key_in_env):
    """The plugin sends its sample_rate and labels the bytes with it: the server must resample to it."""
    async with aiohttp.ClientSession() as session:
        tts = flashtts_plugin.TTS(base_url=server.url, sample_rate=24000, voice="male", http_session=session)
        try:
            frames = await asyncio.wait_for(synthesize(tts, TEXT), timeout=60)
        finally:
            await tts.aclose()
    assert check_frames(frames, 24000) == pytest.approx(spoken_seconds(TEXT), abs=TOLERANCE_S)
