"""The Spark-TTS engine: voice cloning, the built-in voices female/male with pitch and speed labels,
fixed voices, long text and streaming, on any LLM backend.

Generation is phased, and each phase tells the backend which token ids are legal
(``allowed_token_ids``), so the output is well-formed by construction:

- cloning: one phase, semantic tokens only (the prompt ends with ``<|start_semantic_token|>``);
- built-in voices: the model's own control-mode output, one piece at a time —
  ``<|start_acoustic_token|>`` (forced), one pitch value, one speed value,
  ``<|end_acoustic_token|><|start_global_token|>`` (forced), 32 global tokens,
  ``<|end_global_token|><|start_semantic_token|>`` (forced), then semantic tokens. The voice (pitch
  value, speed value, global tokens) is sampled once per request and shared by all its segments.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import AsyncIterator, Optional, Sequence

import numpy as np
from flashtts_core.audio_io import MAX_SECONDS, MIN_SECONDS, audible_reference, mono_reference
from flashtts_core.backend import BackendConfig
from flashtts_core.batcher import DynamicBatcher
from flashtts_core.crossfade import StreamJoiner
from flashtts_core.engine import BackendFactory, Capabilities, Engine
from flashtts_core.errors import AudioDecodeError, InvalidRequest
from flashtts_core.options import EngineOptions
from flashtts_core.progress import Progress
from flashtts_core.request import Level, SynthesisRequest, VoiceReference
from flashtts_core.role_store import is_store_url
from flashtts_core.sampling import SamplingParams
from flashtts_core.speaking_rate import bounded_params
from flashtts_core.text import split_text

from .codec import BiCodecCodec
from .fixed_voices import FOLDER as FIXED_VOICE_FOLDER
from .fixed_voices import FixedVoice, FixedVoiceStore
from .options import SparkOptions
from .vocabulary import GENDERS, GLOBAL_TOKENS_PER_VOICE, NUM_GLOBAL_CODES, NUM_SEMANTIC_CODES, SparkVocabulary

logger = logging.getLogger("flashtts.spark")

SUBFOLDERS = ("LLM", "BiCodec", "wav2vec2-large-xlsr-53")

# Streaming (in semantic tokens, 50 per second of audio): the first chunk is 0.2 s (first audio after
# 30 tokens: on a CPU that decodes ~20-30 tokens/s, 1-2 s sooner than a 1 s chunk), each next one twice
# as long up to 8 s. BiCodec's decoder is convolutional (tens of tokens of receptive field each side),
# so a chunk decoded alone differs from the whole decode near its edges (at full size, up to the
# signal's own peak within 0.2 s of a cut). Each chunk is therefore decoded with 1 s of the tokens
# before it and 0.4 s of the tokens after it (the lookahead: a chunk goes out once those exist, or
# the segment has ended) — measured on a full-size BiCodec, that matches the whole decode to ~1e-6
# of peak (0.2 s of lookahead: 2e-2) — and its first 0.1 s overlaps the previous chunk's last 0.1 s;
# the two are crossfaded, so joins neither click nor drift.
FIRST_CHUNK_TOKENS = 10
MAX_CHUNK_TOKENS = 400
LEFT_CONTEXT_TOKENS = 50
LOOKAHEAD_TOKENS = 20
OVERLAP_TOKENS = 5


@dataclass(frozen=True)
class ControlVoice:
    """What the model samples in control mode before it speaks."""

    pitch_value: int
    speed_value: int
    global_tokens: tuple[int, ...]


def _derive_seed(seed: Optional[int], *parts: object) -> Optional[int]:
    """A distinct, reproducible seed per phase and segment of one request (None stays None)."""
    if seed is None:
        return None
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SparkEngine(Engine):
    name = "spark"
    description = "Spark-TTS-0.5B (16 kHz): Qwen2 LLM + BiCodec; cloning, female/male voices with pitch and speed"
    default_role_dir = "data/roles"
    capabilities = Capabilities(
        clone=True,
        reference_text=True,
        named_voices=True,
        pitch_speed=True,
        multi_speaker=True,
        streaming=True,
    )
    sample_rate = 16000
    voices = list(GENDERS)
    languages = ["en", "zh"]
    # Upstream's generate() settings; max_tokens counts semantic tokens (3000 = 60 s of audio).
    default_sampling = SamplingParams(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.0, max_tokens=3000)

    def __init__(
        self,
        backend,
        vocabulary: SparkVocabulary,
        tokenizer_codec: BiCodecCodec,
        detokenizer_codec: BiCodecCodec,
        options: EngineOptions,
    ):
        self.backend = backend
        self.vocab = vocabulary
        self.tokenizer_codec = tokenizer_codec
        self.detokenizer_codec = detokenizer_codec
        self.hop_length = detokenizer_codec.hop_length
        own = SparkOptions.of(options)
        if own.detokenizer_dtype != "float32":
            detokenizer_codec.set_decoder_dtype(own.detokenizer_dtype)
            logger.info("BiCodec decodes in %s", own.detokenizer_dtype)
        self.tokens_per_second = self.sample_rate / self.hop_length  # semantic tokens: 50 a second
        self.fix_voice = own.fix_voice
        role_dir = Path(options.role_dir) if options.role_dir is not None else Path(self.default_role_dir)
        if is_store_url(options.role_dir):  # roles in s3://…: fixed voices stay a local file of this process
            role_dir = Path(self.default_role_dir)
        self.fixed_voices = FixedVoiceStore(role_dir / FIXED_VOICE_FOLDER)
        self._fixed_voice_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._tokenize = DynamicBatcher(
            tokenizer_codec.encode,
            batch_size=options.batch_size,
            wait_timeout=options.wait_timeout,
            name="spark-tokenize",
        )
        self._detokenize = DynamicBatcher(
            detokenizer_codec.decode,
            batch_size=options.batch_size,
            wait_timeout=options.wait_timeout,
            name="spark-detokenize",
        )

    # -- class-level ------------------------------------------------------------------------------
    @classmethod
    def detect(cls, path: Path) -> bool:
        return all((Path(path) / sub).is_dir() for sub in SUBFOLDERS)

    @classmethod
    def write_tiny_model(cls, path: Path) -> None:
        """config.yaml, BiCodec/, wav2vec2-large-xlsr-53/ and LLM/ with tiny random weights; its LLM
        never samples a stop token, so a generation runs to max_tokens (max_tokens x 320 samples)."""
        from .tiny_model import write_tiny_spark

        write_tiny_spark(Path(path))

    @classmethod
    async def load(cls, options: EngineOptions, create_backend: BackendFactory) -> "SparkEngine":
        from flashtts_core.options import llm_dtype_name, resolve_device

        model_path = Path(options.model_path)
        options = cls._llm_dtype_fallback(options)
        tokenizer_device = resolve_device(options.tokenizer_device)
        detokenizer_device = resolve_device(options.detokenizer_device)
        start = time.perf_counter()
        llm_device = resolve_device(options.llm_device)
        split = detokenizer_device != tokenizer_device
        loading = Progress(f"loading Spark-TTS from {model_path}", 4 if split else 3, logger)

        async def load_codecs() -> tuple[BiCodecCodec, BiCodecCodec]:
            tokenizer_codec = await asyncio.to_thread(
                BiCodecCodec.load,
                model_path,
                tokenizer_device,
                wav2vec_attn_implementation=SparkOptions.of(options).wav2vec_attn_implementation,
            )
            loading.done(
                "BiCodec audio tokenizer (BiCodec/ + wav2vec2-large-xlsr-53/) on %s, float32%s",
                tokenizer_device,
                "" if split else ", also the detokenizer",
            )
            if not split:
                return tokenizer_codec, tokenizer_codec
            detokenizer_codec = await asyncio.to_thread(
                BiCodecCodec.load, model_path, detokenizer_device, encoder=False
            )
            loading.done("BiCodec detokenizer (BiCodec/) on %s, float32", detokenizer_device)
            return tokenizer_codec, detokenizer_codec

        async def load_vocabulary() -> SparkVocabulary:
            from transformers import AutoTokenizer

            tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, str(model_path / "LLM"))
            loading.done("text tokenizer (LLM/, %d tokens)", len(tokenizer))
            return SparkVocabulary(tokenizer)

        async def load_llm():
            backend = await create_backend(BackendConfig.from_options(options, model_path / "LLM"))
            loading.done(
                "LLM (LLM/) on %s, %s, %s", options.backend, llm_device, llm_dtype_name(options, llm_device, backend)
            )
            return backend

        try:
            results = await asyncio.gather(load_vocabulary(), load_codecs(), load_llm(), return_exceptions=True)
        finally:
            loading.close()
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            if not isinstance(results[2], BaseException):
                await results[2].close()  # a backend (e.g. vLLM's engine process) must not outlive a failed load
            raise failed[0]
        vocabulary, (tokenizer_codec, detokenizer_codec), backend = results
        engine = cls(backend, vocabulary, tokenizer_codec, detokenizer_codec, options)
        logger.info(
            "Spark-TTS ready in %.1f s (fix_voice %s, fixed voices in %s)",
            time.perf_counter() - start,
            "on" if engine.fix_voice else "off",
            engine.fixed_voices.root,
        )
        return engine

    @staticmethod
    def _llm_dtype_fallback(options: EngineOptions) -> EngineOptions:
        """Spark-TTS's LLM does not run in float16 (upstream FlashTTS refuses it): use bfloat16 where
        the device supports it, else float32. ``auto`` would pick float16 on a CUDA GPU without
        bfloat16 (T4, V100): float32 there too."""
        if options.torch_dtype not in ("float16", "auto"):
            return options
        import torch
        from flashtts_core.options import resolve_device

        device = resolve_device(options.llm_device)
        bf16 = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if options.torch_dtype == "auto" and (bf16 or not device.startswith("cuda")):
            return options  # auto is bfloat16 on this GPU, float32 elsewhere
        fallback = "bfloat16" if bf16 else "float32"
        logger.warning("Spark-TTS does not support float16: loading the LLM in %s instead", fallback)
        return options.model_copy(update={"torch_dtype": fallback})

    async def close(self) -> None:
        self._tokenize.close()
        self._detokenize.close()
        await self.backend.close()

    # -- references -------------------------------------------------------------------------------
    async def prepare_reference(self, reference: VoiceReference) -> VoiceReference:
        """Compute the reference's BiCodec tokens once: ``features["global_tokens"]`` (32,) and
        ``features["semantic_tokens"]`` (T,), int64. Valid cached features are kept as they are."""
        if self._valid_features(reference.features):
            return reference
        audio = self._check_reference_audio(reference)
        try:
            global_tokens, semantic_tokens = await self._tokenize.submit(audio)
        except ValueError as exc:
            raise AudioDecodeError(f"reference audio cannot be tokenized: {exc}") from None
        if len(semantic_tokens) == 0:
            raise AudioDecodeError("reference audio is too short to yield any semantic token")
        features = {
            "global_tokens": np.asarray(global_tokens, dtype=np.int64),
            "semantic_tokens": np.asarray(semantic_tokens, dtype=np.int64),
        }
        return replace(reference, audio=audio, sample_rate=self.sample_rate, features=features)

    def _check_reference_audio(self, reference: VoiceReference) -> np.ndarray:
        audio = mono_reference(reference.audio, reference.sample_rate)
        duration = audio.size / reference.sample_rate
        if duration < MIN_SECONDS:
            raise AudioDecodeError(
                f"reference audio is {duration * 1000:.0f} ms long; the minimum is {MIN_SECONDS:g} s",
                param="reference_audio",
            )
        # wav2vec2 attends over the whole clip: a long one costs quadratic time and memory.
        if duration > MAX_SECONDS:
            raise AudioDecodeError(
                f"reference audio is {duration:.1f} s long; the maximum is {MAX_SECONDS:g} s", param="reference_audio"
            )
        return audible_reference(audio, reference.sample_rate, self.sample_rate)

    @staticmethod
    def _valid_features(features: dict) -> bool:
        g = features.get("global_tokens")
        s = features.get("semantic_tokens")
        if g is None or s is None:
            return False
        g, s = np.asarray(g), np.asarray(s)
        return (
            g.shape == (GLOBAL_TOKENS_PER_VOICE,)
            and s.ndim == 1
            and s.size > 0
            and np.issubdtype(g.dtype, np.integer)
            and np.issubdtype(s.dtype, np.integer)
            and g.min() >= 0
            and g.max() < NUM_GLOBAL_CODES
            and s.min() >= 0
            and s.max() < NUM_SEMANTIC_CODES
        )

    # -- synthesis --------------------------------------------------------------------------------
    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[np.ndarray]:
        """Float32 16 kHz chunks: one per text segment (segments generated concurrently), or, when
        ``request.stream``, growing crossfaded chunks from the first ~1 s of audio on."""
        self.check_request(request)
        segments = split_text(request.text, request.length_threshold, request.window_size)
        if not segments:
            raise InvalidRequest("text has nothing to speak", param="text")
        params = self.default_sampling.with_overrides(request.sampling)
        pitch = request.pitch.rank if request.pitch is not None else None
        speed = request.speed.rank if request.speed is not None else None

        if request.reference is not None:
            reference = await self.prepare_reference(request.reference)
            global_tokens = tuple(int(g) for g in reference.features["global_tokens"])
            prompts = [
                self.vocab.clone_prompt(
                    segment, global_tokens, reference.features["semantic_tokens"], reference.text, pitch, speed
                )
                for segment in segments
            ]
        else:
            gender = request.voice or "female"
            pitch_level = Level.moderate.rank if pitch is None else pitch
            speed_level = Level.moderate.rank if speed is None else speed
            heads = [self.vocab.control_prompt(s, GENDERS[gender], pitch_level, speed_level) for s in segments]
            voice = await self._control_voice(heads[0], params, gender, pitch_level)
            global_tokens = voice.global_tokens
            suffix = self.vocab.control_voice_suffix(voice.pitch_value, voice.speed_value, voice.global_tokens)
            prompts = [head + suffix for head in heads]

        semantic_params = params.with_overrides(
            stop_token_ids=self.vocab.stop_ids, allowed_token_ids=self.vocab.semantic_phase_ids, min_tokens=1
        )
        # A model that never stops (the demo model, a real one looping on silence) must not turn a
        # short text into a minute of audio: each segment's tokens are bounded by its text.
        segment_params = [
            bounded_params(
                replace(semantic_params, seed=_derive_seed(params.seed, "semantic", i)),
                segment,
                self.tokens_per_second,
                request.sampling.max_tokens,
                request.speaking_rate_bound,
                request.bound_report,
            )
            for i, segment in enumerate(segments)
        ]
        logger.debug("request %s: %d segment(s), stream %s", request.request_id, len(prompts), request.stream)
        if request.stream:
            # Segment i+1 starts generating as soon as segment i's tokens are all out, while segment
            # i's last chunks are still being decoded and sent: no gap waits on the LLM.
            pumps: list[_TokenPump] = []

            def start(i: int) -> None:
                if i < len(prompts):
                    pumps.append(_TokenPump(self.backend, prompts[i], segment_params[i], on_done=lambda: start(i + 1)))

            start(0)
            try:
                for i in range(len(prompts)):
                    async for chunk in self._stream_segment(pumps[i], global_tokens):
                        yield chunk
            finally:
                for pump in pumps:
                    await pump.close()
            return

        tasks = [
            asyncio.ensure_future(self._segment_audio(prompt, seg_params, global_tokens))
            for prompt, seg_params in zip(prompts, segment_params)
        ]
        try:
            for task in tasks:
                yield await task
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _control_voice(self, prompt: list[int], params: SamplingParams, gender: str, pitch: int) -> ControlVoice:
        """Sample (or, with --fix_voice, reuse) the pitch value, speed value and 32 global tokens."""
        if not self.fix_voice:
            return await self._sample_voice(prompt, params)
        pitch_name = list(Level)[pitch].value
        fixed = self.fixed_voices.get(gender, pitch_name)
        if fixed is None:
            lock = self._fixed_voice_locks.setdefault((gender, pitch_name), asyncio.Lock())
            async with lock:  # concurrent first requests must agree on one voice
                fixed = await asyncio.to_thread(self.fixed_voices.get, gender, pitch_name)
                if fixed is None:
                    voice = await self._sample_voice(prompt, params)
                    fixed = await asyncio.to_thread(
                        self.fixed_voices.put, FixedVoice(gender, pitch_name, voice.pitch_value, voice.global_tokens)
                    )
                    if fixed.global_tokens == voice.global_tokens:
                        return voice
        speed_value = await self._sample_speed(prompt, params, fixed.pitch_value)
        return ControlVoice(fixed.pitch_value, speed_value, fixed.global_tokens)

    async def _sample_voice(self, prompt: list[int], params: SamplingParams) -> ControlVoice:
        vocab = self.vocab
        pitch_value = await self._sample_one(
            prompt, params, vocab.pitch_value_phase_ids, vocab.pitch_values, "pitch_value"
        )
        speed_value = await self._sample_speed(prompt, params, pitch_value)
        global_tokens = await self._sample_globals(prompt, params, pitch_value, speed_value)
        return ControlVoice(pitch_value, speed_value, global_tokens)

    async def _sample_speed(self, prompt: list[int], params: SamplingParams, pitch_value: int) -> int:
        vocab = self.vocab
        head = prompt + [vocab.pitch_values.id(pitch_value)]
        return await self._sample_one(head, params, vocab.speed_value_phase_ids, vocab.speed_values, "speed_value")

    async def _sample_one(
        self, prompt: list[int], params: SamplingParams, allowed: tuple[int, ...], family, phase: str
    ) -> int:
        phase_params = params.with_overrides(
            max_tokens=1,
            allowed_token_ids=allowed,
            stop_token_ids=(),
            min_tokens=0,
            seed=_derive_seed(params.seed, phase),
        )
        out = await self.backend.generate(prompt, phase_params)
        code = family.code(out.token_ids[0]) if out.token_ids else None
        if code is None:
            raise RuntimeError(f"the LLM backend ignored allowed_token_ids in the {phase} phase: {out.token_ids[:4]}")
        return code

    async def _sample_globals(
        self, prompt: list[int], params: SamplingParams, pitch_value: int, speed_value: int
    ) -> tuple[int, ...]:
        vocab = self.vocab
        head = prompt + [
            vocab.pitch_values.id(pitch_value),
            vocab.speed_values.id(speed_value),
            vocab.end_acoustic,
            vocab.start_global,
        ]
        phase_params = params.with_overrides(
            max_tokens=GLOBAL_TOKENS_PER_VOICE,
            allowed_token_ids=vocab.global_phase_ids,
            stop_token_ids=(),
            min_tokens=0,
            seed=_derive_seed(params.seed, "global"),
        )
        out = await self.backend.generate(head, phase_params)
        codes = vocab.global_codes(out.token_ids)
        if len(codes) != GLOBAL_TOKENS_PER_VOICE:
            raise RuntimeError(f"the LLM produced {len(codes)} global tokens instead of {GLOBAL_TOKENS_PER_VOICE}")
        return tuple(codes)

    async def _segment_audio(
        self, prompt: list[int], params: SamplingParams, global_tokens: Sequence[int]
    ) -> np.ndarray:
        """One segment, whole: all its semantic tokens, decoded at once."""
        out = await self.backend.generate(prompt, params)
        codes = self.vocab.semantic_codes(out.token_ids)
        if not codes:
            logger.warning("a segment produced no semantic tokens (finish reason %s)", out.finish_reason)
            return np.zeros(0, dtype=np.float32)
        return await self._decode(global_tokens, codes)

    async def _decode(self, global_tokens: Sequence[int], codes: Sequence[int]) -> np.ndarray:
        item = (np.asarray(global_tokens, dtype=np.int64), np.asarray(codes, dtype=np.int64))
        return await self._detokenize.submit(item)

    async def _stream_segment(self, tokens: "_TokenPump", global_tokens: Sequence[int]) -> AsyncIterator[np.ndarray]:
        """One segment as growing chunks; their concatenation is exactly as long as the whole decode."""
        joiner = StreamJoiner(OVERLAP_TOKENS * self.hop_length)
        codes: list[int] = []
        emitted = 0  # tokens whose audio has gone to the joiner
        chunk = FIRST_CHUNK_TOKENS
        async for delta in tokens:
            codes.extend(self.vocab.semantic_codes(delta))
            while len(codes) - emitted >= chunk + LOOKAHEAD_TOKENS:
                audio = await self._decode_window(global_tokens, codes, emitted, emitted + chunk)
                yield joiner.push(audio)
                emitted += chunk
                chunk = min(chunk * 2, MAX_CHUNK_TOKENS)
        if len(codes) > emitted:
            yield joiner.push(await self._decode_window(global_tokens, codes, emitted, len(codes)))
        tail = joiner.flush()
        if tail.size:
            yield tail

    async def _decode_window(self, global_tokens: Sequence[int], codes: list[int], start: int, end: int) -> np.ndarray:
        """Audio of tokens [start - overlap, end) (from 0 for the first chunk), decoded with the
        context that exists on both sides."""
        head = max(0, start - OVERLAP_TOKENS)
        context_start = max(0, head - LEFT_CONTEXT_TOKENS)
        context_end = min(len(codes), end + LOOKAHEAD_TOKENS)
        audio = await self._decode(global_tokens, codes[context_start:context_end])
        return audio[(head - context_start) * self.hop_length : (end - context_start) * self.hop_length]


class _TokenPump:
    """Runs one backend stream in its own task and buffers its token deltas, so a segment can
    generate ahead of the consumer. ``on_done`` runs once the generation has ended (not on cancel)."""

    _END = object()

    def __init__(self, backend, prompt: list[int], params: SamplingParams, on_done=None):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._on_done = on_done
        self._task = asyncio.ensure_future(self._run(backend, prompt, params))

    async def _run(self, backend, prompt: list[int], params: SamplingParams) -> None:
        stream = backend.stream(prompt, params)
        try:
            async for delta in stream:
                self._queue.put_nowait(delta)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer
            self._queue.put_nowait(exc)
        else:
            if self._on_done is not None:
                self._on_done()
        finally:
            await stream.aclose()
            self._queue.put_nowait(self._END)

    async def __aiter__(self) -> AsyncIterator[list[int]]:
        while True:
            item = await self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
