"""livekit-plugins-cartesia's streaming ``cartesia.TTS(base_url=…)`` pointed at FlashTTS's
``/tts/websocket``, unmodified: text pushed in pieces as an LLM writes it, ``SynthesizedAudio`` frames and
their timed transcripts read out, as LiveKit's ``tts_node`` reads a streaming TTS.

The plugin opens ``base_url + /tts/websocket?cartesia_version=…`` with an ``X-API-Key`` header (the
server here has no --api_key: any key passes), sends one context per stream (``continue: true`` per
sentence of its own tokenizer, then ``" "`` with ``continue: false``) and labels the audio with the
sample rate it asked for.
"""

from __future__ import annotations

import asyncio

import pytest

cartesia = pytest.importorskip("livekit.plugins.cartesia")
import aiohttp  # noqa: E402
from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT  # noqa: E402

PIECES = ["Hello there, ", "my friend. ", "How are ", "you today?"]


async def run_stream(tts, pieces: list[str]) -> list:
    frames = []
    async with tts.stream() as stream:
        for piece in pieces:
            stream.push_text(piece)
            await asyncio.sleep(0.01)  # as an LLM writes it
        stream.end_input()
        async for event in stream:
            frames.append(event.frame)
    return frames


@pytest.mark.parametrize("sample_rate", [16000, 24000])
async def test_streaming_tts_frames_and_word_timings(engine_server, sample_rate):
    """Through each engine (Spark, Orpheus, MegaTTS3): every frame at the asked rate, each sentence as long
    as its speaking-rate bound on the tiny model, every word timed in order, the last ending with the audio."""
    async with aiohttp.ClientSession() as http:
        tts = cartesia.TTS(
            base_url=engine_server.url,
            api_key="any",
            voice=engine_server.voice,
            sample_rate=sample_rate,
            http_session=http,
        )
        try:
            frames = await asyncio.wait_for(run_stream(tts, PIECES), timeout=60)
        finally:
            await tts.aclose()

    assert frames, "no audio frames"
    for frame in frames:
        assert (frame.sample_rate, frame.num_channels) == (sample_rate, 1)
    seconds = sum(frame.samples_per_channel for frame in frames) / sample_rate
    # Two sentences, each to its speaking-rate bound on the tiny model; resampling edges aside.
    expected = engine_server.seconds("Hello there, my friend.") + engine_server.seconds("How are you today?")
    assert seconds == pytest.approx(expected, abs=0.1)

    timed = [t for frame in frames for t in frame.userdata.get(USERDATA_TIMED_TRANSCRIPT, [])]
    assert "".join(t for t in timed).split() == "".join(PIECES).split()
    starts = [t.start_time for t in timed]
    assert starts == sorted(starts) and timed[-1].end_time == pytest.approx(seconds, abs=0.1)
