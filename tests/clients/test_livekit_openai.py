"""livekit-plugins-openai's ``openai.TTS`` pointed at FlashTTS, driven as LiveKit's default
``tts_node`` drives a non-streaming TTS: wrapped in a ``tts.StreamAdapter`` with the blingfire
sentence tokenizer, text pushed in, ``SynthesizedAudio`` frames read out.

The plugin labels whatever it gets 24 kHz mono (its SAMPLE_RATE): pcm bytes are cut into frames at
24 kHz as they are, other formats are decoded and resampled to 24 kHz. Models tts-1/tts-1-hd ask for
the plain bytes; any other model (its default, gpt-4o-mini-tts) asks for ``stream_format: sse``.
"""

from __future__ import annotations

import asyncio

import pytest

lk_openai = pytest.importorskip("livekit.plugins.openai")
from livekit.agents import tokenize  # noqa: E402
from livekit.agents import tts as lk_tts  # noqa: E402

TEXT = "Hi."
TOLERANCE_S = 0.05  # resampling edges; a wrong rate is off by a third or more


async def synthesize_as_tts_node(tts, text: str) -> list:
    """``Agent.default.tts_node`` for a TTS without streaming: a StreamAdapter over ``synthesize``."""
    adapter = lk_tts.StreamAdapter(tts=tts, sentence_tokenizer=tokenize.blingfire.SentenceTokenizer(retain_format=True))
    frames = []
    try:
        async with adapter.stream() as stream:
            stream.push_text(text)
            stream.end_input()
            async for event in stream:
                frames.append(event.frame)
    finally:
        await adapter.aclose()
    return frames


@pytest.mark.parametrize(
    ("model", "response_format"),
    [
        ("tts-1", "pcm"),  # the audio bytes, labelled 24 kHz as they come
        ("gpt-4o-mini-tts", "pcm"),  # SSE speech.audio.delta events of pcm
        ("gpt-4o-mini-tts", None),  # the plugin's defaults: SSE of mp3, decoded
    ],
)
async def test_frames_are_24khz_mono_int16_of_the_right_length(server, spoken_seconds, model, response_format):
    options = {} if response_format is None else {"response_format": response_format}
    tts = lk_openai.TTS(model=model, voice="alloy", base_url=f"{server.url}/v1", api_key="unused", **options)
    try:
        frames = await asyncio.wait_for(synthesize_as_tts_node(tts, TEXT), timeout=60)
    finally:
        await tts.aclose()

    assert frames, "no audio frames"
    for frame in frames:
        assert (frame.sample_rate, frame.num_channels) == (24000, 1)
        assert frame.data.format == "h" and len(frame.data) == frame.samples_per_channel
    seconds = sum(frame.samples_per_channel for frame in frames) / 24000
    # mp3 decodes with its encoder padding: up to ~0.1 s more.
    slack = TOLERANCE_S if response_format == "pcm" else 0.15
    assert spoken_seconds(TEXT) - TOLERANCE_S <= seconds <= spoken_seconds(TEXT) + slack
