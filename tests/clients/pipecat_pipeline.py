"""A real Pipecat pipeline around one stock TTS service, for tests/clients/test_pipecat_*.py: an LLM's reply
queued as Pipecat's LLM frames (start, text pieces, end), the service's audio frames caught by a sink at
the end, the word timestamps the service computed recorded as it hands them on, and a barge-in (an
``InterruptionFrame`` after the first audio)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Optional

from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner


class AudioSink(FrameProcessor):
    """The end of the pipeline: keeps the TTS audio frames (with when they came), passes everything on."""

    def __init__(self):
        super().__init__()
        self.audio: list[TTSAudioRawFrame] = []
        self.arrived: list[float] = []
        self.first_audio = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio.append(frame)
            self.arrived.append(asyncio.get_running_loop().time())
            self.first_audio.set()
        await self.push_frame(frame, direction)


def recording(service_class: type) -> type:
    """``service_class`` unchanged, except that each batch of word timestamps it computes is also kept in
    ``self.words`` as (word, seconds from the start of its context's audio)."""

    class Recording(service_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.words: list[tuple[str, float]] = []

        async def add_word_timestamps(self, word_times, context_id=None, *args, **kwargs):
            self.words += [(word, float(t)) for word, t in word_times]
            return await super().add_word_timestamps(word_times, context_id, *args, **kwargs)

    return Recording


@dataclass
class Run:
    audio: list[TTSAudioRawFrame]
    errors: list = field(default_factory=list)
    interrupted_at: Optional[float] = None  # loop time of the barge-in
    arrived: list[float] = field(default_factory=list)


async def speak(service, pieces: list[str], interrupt_after_first_audio: bool = False, on_interrupt=None) -> Run:
    """Run an LLM reply of ``pieces`` through [service, sink]. With ``interrupt_after_first_audio``, an
    InterruptionFrame follows the first audio and the reply never ends; ``on_interrupt()`` (a coroutine
    function) then runs before the pipeline is ended."""
    sink = AudioSink()
    worker = PipelineWorker(Pipeline([service, sink]), params=PipelineParams(), cancel_on_idle_timeout=False)
    run = Run(audio=sink.audio, arrived=sink.arrived)

    @worker.event_handler("on_pipeline_error")
    async def _on_error(worker, frame):
        run.errors.append(frame.error)

    async def feed():
        await worker.queue_frame(LLMFullResponseStartFrame())
        for piece in pieces:
            await worker.queue_frame(LLMTextFrame(piece))
            await asyncio.sleep(0.03)  # as an LLM writes it
        if interrupt_after_first_audio:
            await sink.first_audio.wait()
            await worker.queue_frame(InterruptionFrame())
            run.interrupted_at = asyncio.get_running_loop().time()
            if on_interrupt is not None:
                await on_interrupt()
        else:
            await worker.queue_frame(LLMFullResponseEndFrame())
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    feeding = asyncio.ensure_future(feed())
    try:
        await runner.run()
    finally:
        if not feeding.done():
            feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
    return run
