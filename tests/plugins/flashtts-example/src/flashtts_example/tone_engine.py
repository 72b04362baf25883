"""The tone engine: each generated token becomes 20 ms of a sine tone. Audio from tokens, the same
shape as a real LLM-based TTS engine, in a few dozen lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import AsyncIterator

import numpy as np
from flashtts_core import BackendConfig, Capabilities, Engine, SamplingParams, SynthesisRequest, VoiceReference
from flashtts_core.text import split_text

from .options import ToneOptions

SAMPLE_RATE = 16000
FRAME = 320  # 20 ms per token
VOCAB = 64
BASE_HZ = {"low": 110.0, "high": 220.0}


class ToneEngine(Engine):
    name = "tone"
    description = "example: tokens to sine tones"
    capabilities = Capabilities(clone=True, named_voices=True, pitch_speed=True, multi_speaker=True, streaming=True)
    sample_rate = SAMPLE_RATE
    voices = ["low", "high"]
    default_sampling = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_tokens=50)

    def __init__(self, backend, gain: float = 0.3):
        self.backend = backend
        self.gain = gain

    @classmethod
    def detect(cls, path: Path) -> bool:
        return (Path(path) / "tone.json").is_file()

    @classmethod
    def write_tiny_model(cls, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "tone.json").write_text(json.dumps({"engine": "tone"}))
        (path / "markov.json").write_text(json.dumps({"vocab_size": VOCAB, "seed": 1}))

    @classmethod
    async def load(cls, options, create_backend) -> "ToneEngine":
        backend = await create_backend(BackendConfig.from_options(options, Path(options.model_path)))
        return cls(backend, gain=ToneOptions.of(options).tone_gain)  # the server flag --tone_gain

    async def prepare_reference(self, reference: VoiceReference) -> VoiceReference:
        # The "voice" of a reference: its dominant frequency.
        audio = reference.audio
        spectrum = np.abs(np.fft.rfft(audio[:SAMPLE_RATE]))
        freqs = np.fft.rfftfreq(min(len(audio), SAMPLE_RATE), 1 / SAMPLE_RATE)
        reference.features = {"base_hz": np.array([float(freqs[int(np.argmax(spectrum))]) or 110.0], dtype=np.float32)}
        return reference

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[np.ndarray]:
        if request.reference is not None:
            base = float(request.reference.features["base_hz"][0])
        else:
            base = BASE_HZ[request.voice or "low"]
        if request.pitch is not None:
            base *= 2 ** ((request.pitch.rank - 2) / 4)
        base *= 2.0 ** ToneOptions.of(None, request).tone_octave  # the request field tone_octave
        params = self.default_sampling.with_overrides(request.sampling)
        for segment in split_text(request.text, request.length_threshold, request.window_size):
            prompt = [b % VOCAB for b in segment.encode()]
            async for delta in self.backend.stream(prompt, params):
                for token in delta:
                    t = np.arange(FRAME) / SAMPLE_RATE
                    yield (self.gain * np.sin(2 * np.pi * base * (1 + token / VOCAB) * t)).astype(np.float32)

    async def close(self) -> None:
        await self.backend.close()
