"""The Spark-TTS engine: voice cloning, the built-in voices female/male with pitch and speed labels,
fixed voices, long text and streaming, on any LLM backend.

Generation is phased, and each phase tells the backend which token ids are legal
(``allowed_token_ids``), so the output is well-formed by construction:

- cloning: one phase, semantic tokens only (the prompt ends with ``<|start_semantic_token|>``);
- built-in voices: first the control-mode phases that sample the voice (``control_voice``), then the
  same semantic phase.

Each segment is decoded whole, or, for a streamed request, in growing crossfaded chunks
(``streaming``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator, Sequence

import numpy as np
from flashtts_core.audio_io import MAX_SECONDS, MIN_SECONDS, audible_reference, mono_reference
from flashtts_core.backend import BackendConfig
from flashtts_core.batcher import DynamicBatcher
from flashtts_core.engine import BackendFactory, Capabilities, Engine
from flashtts_core.errors import AudioDecodeError, InvalidRequest
from flashtts_core.options import EngineOptions, resolve_device
from flashtts_core.progress import Progress
from flashtts_core.request import Level, SynthesisRequest, VoiceReference
from flashtts_core.role_store import is_store_url
from flashtts_core.sampling import SamplingParams
from flashtts_core.speaking_rate import bounded_params
from flashtts_core.text import split_text

from .codec import BiCodecCodec
from .control_voice import ControlVoicePhases, derive_seed
from .fixed_voices import FOLDER as FIXED_VOICE_FOLDER
from .fixed_voices import FixedVoiceStore
from .options import SparkOptions
from .streaming import stream_segments
from .vocabulary import GENDERS, GLOBAL_TOKENS_PER_VOICE, NUM_GLOBAL_CODES, NUM_SEMANTIC_CODES, SparkVocabulary

logger = logging.getLogger("flashtts.spark")

SUBFOLDERS = ("LLM", "BiCodec", "wav2vec2-large-xlsr-53")


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
        if own.bicodec_decoder == "packed" or (
            own.bicodec_decoder == "auto" and resolve_device(options.detokenizer_device) == "cpu"
        ):
            detokenizer_codec.pack_decoder()
        self.tokens_per_second = self.sample_rate / self.hop_length  # semantic tokens: 50 a second
        self.fix_voice = own.fix_voice
        role_dir = Path(options.role_dir) if options.role_dir is not None else Path(self.default_role_dir)
        if is_store_url(options.role_dir):  # roles in s3://…: fixed voices stay a local file of this process
            role_dir = Path(self.default_role_dir)
        self.fixed_voices = FixedVoiceStore(role_dir / FIXED_VOICE_FOLDER)
        self._control = ControlVoicePhases(backend, vocabulary, self.fixed_voices if self.fix_voice else None)
        # On a CPU the codec shares the LLM's decode thread when the backend offers it (one OpenMP team).
        self._tokenize = DynamicBatcher(
            tokenizer_codec.encode,
            batch_size=options.batch_size,
            wait_timeout=options.wait_timeout,
            name="spark-tokenize",
            executor=backend.executor_for(resolve_device(options.tokenizer_device)),
        )
        self._detokenize = DynamicBatcher(
            detokenizer_codec.decode,
            batch_size=options.batch_size,
            wait_timeout=options.wait_timeout,
            name="spark-detokenize",
            executor=backend.executor_for(resolve_device(options.detokenizer_device)),
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
        from flashtts_core.options import llm_dtype_name

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

        vocabulary_task = asyncio.ensure_future(load_vocabulary())

        async def load_llm():
            # The backend is told which ids the phases can emit (llama-cpp cuts its output head to them).
            try:
                output_ids = (await asyncio.shield(vocabulary_task)).output_ids
            except Exception:
                output_ids = None  # the vocabulary's own failure is reported by its task
            backend = await create_backend(BackendConfig.from_options(options, model_path / "LLM", output_ids))
            loading.done(
                "LLM (LLM/) on %s, %s, %s", options.backend, llm_device, llm_dtype_name(options, llm_device, backend)
            )
            return backend

        try:
            results = await asyncio.gather(vocabulary_task, load_codecs(), load_llm(), return_exceptions=True)
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
            prompts, global_tokens = await self._control.prompts(segments, gender, pitch_level, speed_level, params)

        semantic_params = params.with_overrides(
            stop_token_ids=self.vocab.stop_ids, allowed_token_ids=self.vocab.semantic_phase_ids, min_tokens=1
        )
        # A model that never stops (the demo model, a real one looping on silence) must not turn a
        # short text into a minute of audio: each segment's tokens are bounded by its text.
        segment_params = [
            bounded_params(
                replace(semantic_params, seed=derive_seed(params.seed, "semantic", i)),
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
            # aclosing: a client that goes away stops the segments' generation now, not at garbage collection.
            chunks = stream_segments(
                self.backend,
                prompts,
                segment_params,
                self.vocab.semantic_codes,
                lambda codes: self._decode(global_tokens, codes),
                self.hop_length,
            )
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
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
