"""pipecat-ai's ``OpenAITTSService`` pointed at FlashTTS, in a real pipeline: a ``TTSSpeakFrame`` in,
the ``TTSAudioRawFrame``s it pushes downstream caught by a sink at the end.

The service asks for ``response_format: pcm`` (no sample rate) and labels the bytes with the
pipeline's output rate, 24 kHz by default, as OpenAI's pcm is. It only takes OpenAI's voice names, so
the server maps them (``--voice_alias``).
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("pipecat.services.openai.tts")
from pipecat.frames.frames import EndFrame, Frame, TTSAudioRawFrame, TTSSpeakFrame  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.services.openai.tts import OpenAITTSService  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

TEXT = "Hi."
TOLERANCE_S = 0.05  # a wrong rate is off by a third or more


class AudioSink(FrameProcessor):
    """The end of the pipeline: keeps the TTS audio frames, passes everything on."""

    def __init__(self):
        super().__init__()
        self.audio: list[TTSAudioRawFrame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio.append(frame)
        await self.push_frame(frame, direction)


async def speak(service: OpenAITTSService, text: str) -> tuple[list[TTSAudioRawFrame], list]:
    """Run ``text`` through [service, sink]; the audio frames and any pipeline errors."""
    sink = AudioSink()
    worker = PipelineWorker(Pipeline([service, sink]), params=PipelineParams(), cancel_on_idle_timeout=False)
    errors = []

    @worker.event_handler("on_pipeline_error")
    async def _on_error(worker, frame):
        errors.append(frame.error)

    await worker.queue_frames([TTSSpeakFrame(text), EndFrame()])
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    return sink.audio, errors


@pytest.mark.parametrize("voice", ["alloy", "nova"])
async def test_pipeline_audio_is_24khz_mono_pcm_of_the_right_length(server, spoken_seconds, voice):
    import openai

    service = OpenAITTSService(
        api_key="unused",
        base_url=f"{server.url}/v1",
        # A bound on each call: a slow or hung server fails the test, quickly.
        http_client=openai.DefaultAsyncHttpxClient(timeout=60),
        settings=OpenAITTSService.Settings(voice=voice),
    )
    frames, errors = await asyncio.wait_for(speak(service, TEXT), timeout=90)

    assert not errors
    assert frames, "no audio frames"
    for frame in frames:
        assert (frame.sample_rate, frame.num_channels) == (24000, 1)
        assert len(frame.audio) % 2 == 0  # whole int16 samples
    seconds = sum(len(frame.audio) for frame in frames) / 2 / 24000
    assert seconds == pytest.approx(spoken_seconds(TEXT), abs=TOLERANCE_S)
