"""livekit-plugins-elevenlabs's streaming ``elevenlabs.TTS(base_url=…/v1)`` pointed at FlashTTS's
``/v1/text-to-speech/{voice_id}/multi-stream-input``, unmodified: text pushed in pieces as an LLM writes it,
``SynthesizedAudio`` frames and their timed transcripts read out, as LiveKit's ``tts_node`` reads a
streaming TTS; and a barge-in (the stream closed mid-reply).

The plugin opens ``base_url + /text-to-speech/{voice_id}/multi-stream-input?…&auto_mode=true`` with an
``xi-api-key`` header (the server here has no --api_key: any key passes), one socket for all its streams
and a context per stream: an init message (``text: " "``), each sentence of its own tokenizer with
``flush: true``, then an empty flush and ``close_context``; a stream closed early sends only
``close_context``. It reads ``normalizedAlignment``'s character times as sent, and the audio at the rate
its ``encoding`` names (its default, ``mp3_22050_32``, is decoded by LiveKit itself).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

elevenlabs = pytest.importorskip("livekit.plugins.elevenlabs")
import aiohttp  # noqa: E402
from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT  # noqa: E402

PIECES = ["Hello there, ", "my friend. ", "How are ", "you today?"]
SENTENCES = ["Hello there, my friend.", "How are you today?"]
LONG = " ".join(["Somewhere beyond the distant mountains the travellers kept walking."] * 4)


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


def active_generations(server) -> int:
    return httpx.get(f"{server.url}/server_info", timeout=10).json()["active_generations"]


@pytest.mark.parametrize("encoding,tolerance", [("pcm_24000", 0.05), ("pcm_16000", 0.05), (None, 0.25)])
async def test_streaming_tts_frames_and_word_timings(engine_server, encoding, tolerance):
    """Through each engine (Spark, Orpheus, MegaTTS3). PCM at the asked rate; None: the plugin's default,
    mp3_22050_32 (the encoder's delay and padding make the decoded length a little longer)."""
    options = {"encoding": encoding} if encoding else {}
    async with aiohttp.ClientSession() as http:
        tts = elevenlabs.TTS(
            base_url=f"{engine_server.url}/v1",
            api_key="any",
            voice_id=engine_server.voice,
            http_session=http,
            **options,
        )
        try:
            frames = await asyncio.wait_for(run_stream(tts, PIECES), timeout=90)
        finally:
            await tts.aclose()

    rate = tts.sample_rate
    assert rate == (int(encoding.split("_")[1]) if encoding else 22050)
    assert frames, "no audio frames"
    for frame in frames:
        assert (frame.sample_rate, frame.num_channels) == (rate, 1)
    seconds = sum(frame.samples_per_channel for frame in frames) / rate
    first, second = (engine_server.seconds(s) for s in SENTENCES)
    assert seconds == pytest.approx(first + second, abs=tolerance)

    # LiveKit's aligned transcript: every word, in order, each inside its sentence's span of the audio.
    timed = [t for frame in frames for t in frame.userdata.get(USERDATA_TIMED_TRANSCRIPT, [])]
    assert "".join(t for t in timed).split() == " ".join(SENTENCES).split()
    first_words = len(SENTENCES[0].split())
    for i, word in enumerate(timed):
        low, high = (0.0, first) if i < first_words else (first, first + second)
        # LiveKit ends a word where the next character starts: a sentence's last word, where the next
        # sentence's first word starts (after MegaTTS3's leading 'sil').
        high += engine_server.lead if i == first_words - 1 else 0.0
        assert low - 1e-3 <= word.start_time <= word.end_time <= high + 1e-3, (str(word), word.start_time, low, high)
    assert engine_server.starts_sentence(timed[first_words].start_time, first)
    assert timed[-1].end_time == pytest.approx(first + second, abs=2e-3)


async def test_barge_in_stops_the_context_and_frees_the_generation(engine_server):
    """The stream closed after its first audio (an interruption): the plugin sends close_context without
    a flush before it; the server stops at once, and the same socket serves the next reply. Through each
    engine: the session's cancel is one code path, but each engine frees its own generation (Spark's and
    Orpheus' LLM stream, MegaTTS3's pending segments and DiT/decoder batches)."""
    server = engine_server.server
    async with aiohttp.ClientSession() as http:
        tts = elevenlabs.TTS(
            base_url=f"{server.url}/v1",
            api_key="any",
            voice_id=engine_server.voice,
            encoding="pcm_16000",
            http_session=http,
        )
        try:
            stream = tts.stream()
            stream.push_text(LONG)
            got_audio = asyncio.ensure_future(stream.__anext__())
            await asyncio.wait_for(got_audio, timeout=60)
            assert active_generations(server) == 1
            await stream.aclose()
            closed = time.perf_counter()
            while active_generations(server) != 0:
                assert time.perf_counter() - closed < 2.0, "the interrupted generation was not freed"
                await asyncio.sleep(0.02)
            freed = time.perf_counter() - closed
            frames = await asyncio.wait_for(run_stream(tts, ["Next reply."]), timeout=60)
        finally:
            await tts.aclose()
    print(f"\nbarge-in ({engine_server.engine}): generation freed {freed * 1000:.0f} ms after the stream was closed")
    seconds = sum(frame.samples_per_channel for frame in frames) / 16000
    assert seconds == pytest.approx(engine_server.seconds("Next reply."), abs=0.05)
