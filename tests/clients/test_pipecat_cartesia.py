"""pipecat-ai's ``CartesiaTTSService(url="ws://HOST:PORT/tts/websocket")`` pointed at FlashTTS, unmodified,
in a real pipeline: an LLM's reply in pieces in, the ``TTSAudioRawFrame``s out, the word timestamps the
service reads from ``timestamps`` messages; and a barge-in.

The service sends ``X-API-Key`` and ``Cartesia-Version`` headers, one context per turn: each sentence its
aggregator completes with ``continue: true`` and ``add_timestamps: true``, then ``transcript: ""`` with
``continue: false``; on an interruption ``{context_id, cancel: true}``. It indexes ``type`` and
``context_id`` on every message and labels the audio with the pipeline's output rate (24 kHz).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytest.importorskip("pipecat.services.cartesia.tts")
from pipecat.services.cartesia.tts import CartesiaTTSService  # noqa: E402

from tests.clients.pipecat_pipeline import recording, speak  # noqa: E402

PIECES = ["Hello there, ", "my friend. ", "How are ", "you today?"]
SENTENCES = ["Hello there, my friend.", "How are you today?"]
LONG = ["Somewhere beyond the distant mountains ", "the travellers kept walking. "] * 4
RATE = 24000  # the pipeline's output rate; the service asks for it


def service(server, voice: str = "female"):
    return recording(CartesiaTTSService)(
        api_key="any",
        url=f"ws://127.0.0.1:{server.port}/tts/websocket",
        settings=CartesiaTTSService.Settings(voice=voice),
    )


def active_generations(server) -> int:
    return httpx.get(f"{server.url}/server_info", timeout=10).json()["active_generations"]


async def test_reply_in_pieces_gives_24khz_audio_and_word_timestamps(engine_server):
    """Through each engine (Spark, Orpheus, MegaTTS3)."""
    tts = service(engine_server.server, engine_server.voice)
    run = await asyncio.wait_for(speak(tts, PIECES), timeout=120)

    assert not run.errors
    assert run.audio, "no audio frames"
    for frame in run.audio:
        assert (frame.sample_rate, frame.num_channels) == (RATE, 1)
        assert len(frame.audio) % 2 == 0
    seconds = sum(len(frame.audio) for frame in run.audio) / 2 / RATE
    first, second = (engine_server.seconds(s) for s in SENTENCES)
    assert seconds == pytest.approx(first + second, abs=0.05)

    # Pipecat's word timestamps: every word, in order, each inside its sentence's span.
    words = [(w, t) for w, t in tts.words if w in " ".join(SENTENCES).split()]
    print(f"\n{len(run.audio)} frames, {seconds:.2f} s; word starts: {[round(t, 3) for _, t in words]}")
    assert [w for w, _ in words] == " ".join(SENTENCES).split()
    first_words = len(SENTENCES[0].split())
    for i, (word, start) in enumerate(words):
        low, high = (0.0, first) if i < first_words else (first, first + second)
        assert low - 1e-3 <= start < high, (word, start, low, high)
    assert engine_server.starts_sentence(words[first_words][1], first)


async def test_barge_in_stops_the_context_and_frees_the_generation(server):
    """An InterruptionFrame after the first audio: the service sends cancel; the server stops the context
    at once and frees its generation; no audio of it arrives afterwards."""
    tts = service(server)
    freed = {}

    async def after_interrupt():
        interrupted = time.perf_counter()
        while active_generations(server) != 0:
            assert time.perf_counter() - interrupted < 2.0, "the interrupted generation was not freed"
            await asyncio.sleep(0.02)
        freed["s"] = time.perf_counter() - interrupted
        await asyncio.sleep(1.0)  # time for anything more to arrive (nothing may)

    run = await asyncio.wait_for(speak(tts, LONG, interrupt_after_first_audio=True, on_interrupt=after_interrupt), 120)
    print(f"\nbarge-in: generation freed {freed['s'] * 1000:.0f} ms after the interruption")
    assert run.audio and run.interrupted_at is not None
    late = [t for t in run.arrived if t > run.interrupted_at + freed["s"] + 0.2]
    assert not late, f"{len(late)} audio frames arrived after the interruption was handled"
    total = sum(len(frame.audio) for frame in run.audio) / 2 / RATE
    assert total < 10.0  # far less than the ~30 s the whole reply would have been
