"""The Orpheus engine: prompt ``"{voice}: {text}"``, stream SNAC codes from the LLM, decode them on a
sliding window as upstream does, batched across concurrent requests."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from pathlib import Path
from typing import AsyncIterator, Optional

import numpy as np
from flashtts_core.backend import BackendConfig, LLMBackend
from flashtts_core.batcher import DynamicBatcher
from flashtts_core.engine import BackendFactory, Capabilities, Engine
from flashtts_core.errors import InvalidRequest, ModelLoadError
from flashtts_core.options import EngineOptions, llm_dtype_name, resolve_device
from flashtts_core.progress import progress
from flashtts_core.request import SynthesisRequest
from flashtts_core.sampling import SamplingParams
from flashtts_core.speaking_rate import bounded_params
from flashtts_core.text import split_text

from . import frames
from .frames import FrameParser, build_prompt, frames_to_codes
from .options import OrpheusOptions
from .snac_codec import SnacCodec, is_snac_folder
from .voices import LANGUAGE_CODES, VOICES, resolve_lang

logger = logging.getLogger("flashtts.orpheus")

# LLM tokens per second of audio: a frame of 7 ids is 2048 samples at 24 kHz (~82 ids a second).
TOKENS_PER_SECOND = frames.SLOTS * 24000 / frames.SAMPLES_PER_FRAME

# The multilingual research releases are named like "3b-fr-ft-research_release"; "es_it" first, since
# it ends in "_it".
_LANG_IN_NAME = re.compile(r"(?:^|[-_])(es_it|fr|de|ko|hi|zh)(?=$|[-_])")


def _is_orpheus_config(config: dict) -> bool:
    architectures = config.get("architectures") or []
    return "LlamaForCausalLM" in architectures and int(config.get("vocab_size") or 0) >= frames.AUDIO_END


def lang_from_folder_name(path: Path) -> Optional[str]:
    """The language a multilingual release's folder name says, or None."""
    match = _LANG_IN_NAME.search(Path(path).resolve().name.lower())
    return resolve_lang(match.group(1)) if match else None


class OrpheusEngine(Engine):
    """Orpheus 3B and its multilingual releases: built-in voices, emotion tags, no cloning.

    Detection: the model folder is the LLM itself, so a folder whose ``config.json`` is a
    ``LlamaForCausalLM`` with a vocabulary holding Orpheus's audio ids (>= 156,938; the release has
    156,940) is Orpheus. The SNAC codec is not part of the rule: it may come from ``--snac_path``, and
    its absence is reported when the model loads, naming both places it was looked for.
    """

    name = "orpheus"
    description = "Orpheus TTS (24 kHz): Llama LLM speaking SNAC codes, built-in voices, emotion tags"
    capabilities = Capabilities(clone=False, named_voices=True, pitch_speed=False, multi_speaker=True, streaming=True)
    sample_rate = 24000
    # Upstream's sampling (canopyai/Orpheus-TTS); repetition_penalty >= 1.1 is needed for stable speech.
    default_sampling = SamplingParams(
        temperature=0.6,
        top_k=0,
        top_p=0.9,
        repetition_penalty=1.1,
        max_tokens=1200,
        stop_token_ids=(frames.END_OF_SPEECH,),
    )

    def __init__(self, backend: LLMBackend, tokenizer, codec: SnacCodec, lang: str, options: EngineOptions):
        self.backend = backend
        self.tokenizer = tokenizer
        self.codec = codec
        self.lang = lang
        self.voices = list(VOICES[lang])
        self.languages = list(LANGUAGE_CODES[lang])
        self.decoder: DynamicBatcher = DynamicBatcher(
            codec.decode,
            batch_size=options.batch_size,
            wait_timeout=options.wait_timeout,
            name="snac-decode",
            # On a CPU SNAC shares the LLM's decode thread when the backend offers it (one OpenMP team).
            executor=backend.executor_for(codec.device),
        )
        self._allowed = frames.audio_token_ids()
        self.malformed_frames = 0  # frames skipped since start, over all requests

    # -- class-level ------------------------------------------------------------------------------
    @classmethod
    def detect(cls, path: Path) -> bool:
        config_path = Path(path) / "config.json"
        if not config_path.is_file():
            return False
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and _is_orpheus_config(config)

    @classmethod
    def write_tiny_model(cls, path: Path) -> None:
        from .tiny_model import write_tiny_model

        write_tiny_model(Path(path))

    @classmethod
    async def load(cls, options: EngineOptions, create_backend: BackendFactory) -> "OrpheusEngine":
        model_path = Path(options.model_path)
        own = OrpheusOptions.of(options)
        lang = cls._choose_lang(own.lang, model_path)
        snac_path = Path(own.snac_path) if own.snac_path is not None else model_path / "snac"
        if not is_snac_folder(snac_path):
            where = "--snac_path" if own.snac_path is not None else f"{model_path / 'snac'} (no --snac_path given)"
            raise ModelLoadError(
                f"Orpheus needs the SNAC codec (snac_24khz: config.json + pytorch_model.bin); not found in {where}"
            )
        device = resolve_device(options.detokenizer_device)
        llm_device = resolve_device(options.llm_device)
        logger.info("Orpheus: model %s, language %s", model_path, lang)
        with progress(f"loading Orpheus from {model_path}", 3, logger) as loading:
            codec = await asyncio.to_thread(SnacCodec.load, snac_path, device)
            if codec.sample_rate != cls.sample_rate or codec.vq_strides != (4, 2, 1):
                raise ModelLoadError(
                    f"{snac_path} is not a 24 kHz SNAC with vq_strides [4, 2, 1] (got {codec.sample_rate} Hz, "
                    f"{list(codec.vq_strides)}); Orpheus speaks snac_24khz codes"
                )
            loading.done("SNAC decoder from %s on %s, float32", snac_path, device)
            tokenizer = await asyncio.to_thread(_load_tokenizer, model_path)
            loading.done("text tokenizer (%d tokens)", len(tokenizer))
            # The LLM only ever emits audio ids and the stop id (llama-cpp cuts its output head to them).
            output_ids = (*frames.audio_token_ids(), *cls.default_sampling.stop_token_ids)
            backend = await create_backend(BackendConfig.from_options(options, model_path, output_ids))
            loading.done("LLM on %s, %s, %s", options.backend, llm_device, llm_dtype_name(options, llm_device, backend))
        engine = cls(backend, tokenizer, codec, lang, options)
        logger.info(
            "Orpheus ready: voices %s; SNAC decode batches of up to %d (wait %.3f s)",
            ", ".join(engine.voices),
            options.batch_size,
            options.wait_timeout,
        )
        return engine

    @staticmethod
    def _choose_lang(option: Optional[str], model_path: Path) -> str:
        from_name = lang_from_folder_name(model_path)
        if option is not None:
            lang = resolve_lang(option)
            same_release = from_name == "spanish_italian" and lang in ("spanish", "italian")
            if from_name is not None and from_name != lang and not same_release:
                logger.warning("Orpheus: --lang %s, though the folder name suggests %s", lang, from_name)
            return lang
        if from_name is not None:
            logger.info("Orpheus: language %s from the folder name (set --lang to override)", from_name)
            return from_name
        return resolve_lang(None)

    # -- synthesis --------------------------------------------------------------------------------
    def info(self) -> dict:
        return {**super().info(), "lang": self.lang, "malformed_frames": self.malformed_frames}

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[np.ndarray]:
        """Each text segment in turn; within one, audio after 4 frames and then one chunk per frame."""
        self.check_request(request)
        voice = request.voice or self.voices[0]
        params = self.default_sampling.with_overrides(request.sampling, allowed_token_ids=self._allowed)
        segments = split_text(request.text, request.length_threshold, request.window_size)
        if not segments:
            raise InvalidRequest("text has nothing to speak", param="text")
        for segment in segments:
            # A model that never emits its stop id must not turn a short text into minutes of audio.
            seg_params = bounded_params(
                params,
                segment,
                TOKENS_PER_SECOND,
                request.sampling.max_tokens,
                request.speaking_rate_bound,
                request.bound_report,
            )
            async for chunk in self._speak(f"{voice}: {segment}", seg_params, request.request_id):
                yield chunk

    async def _speak(self, text: str, params: SamplingParams, request_id: str) -> AsyncIterator[np.ndarray]:
        prompt = build_prompt(self.encode_text(text))
        parser = FrameParser()
        window: deque[np.ndarray] = deque(maxlen=frames.WINDOW_FRAMES)
        start = time.perf_counter()
        stream = self.backend.stream(prompt, params)
        try:
            async for delta in stream:
                ready = []
                for frame in parser.feed(delta):
                    window.append(frame)
                    if len(window) == frames.WINDOW_FRAMES:
                        ready.append(np.stack(window))
                if ready:
                    # Windows that arrived together decode together (and with other requests' windows).
                    for audio in await asyncio.gather(*(self._decode_window(w) for w in ready)):
                        yield audio
        finally:
            await stream.aclose()
            stats = parser.finish()
            self.malformed_frames += stats.malformed
            if stats.malformed:
                logger.warning(
                    "request %s: skipped %d malformed frame(s) of audio ids (%d well-formed)",
                    request_id,
                    stats.malformed,
                    stats.frames,
                )
            logger.debug(
                "request %s: %d frames (%d malformed, %d cut short) in %.2f s",
                request_id,
                stats.frames,
                stats.malformed,
                stats.incomplete,
                time.perf_counter() - start,
            )

    def encode_text(self, text: str) -> list[int]:
        """Plain text to ids; token markup typed into the text stays text.

        ``<|eot_id|>`` would end the human turn and ``<custom_token_2>`` is the stop id: special
        tokens are split by the tokenizer, and the custom tokens (ordinary added tokens) are broken
        up first. Emotion tags such as ``<laugh>`` are plain text and pass unchanged.
        """
        text = text.replace("<custom_token_", "< custom_token_")
        return list(self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))

    async def _decode_window(self, window: np.ndarray) -> np.ndarray:
        """Decode 4 frames and keep the second (samples 2048..4096), whose edges the codec saw context for."""
        audio = await self.decoder.submit(frames_to_codes(window))
        return audio[frames.EMIT_START : frames.EMIT_END]

    async def close(self) -> None:
        self.decoder.close()
        await self.backend.close()


def _load_tokenizer(model_path: Path):
    """The model folder's tokenizer; where it names Orpheus's custom tokens, their ids must be the released ones."""
    from transformers import AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    vocab = tokenizer.get_vocab()
    for n, expected in ((0, frames.CUSTOM_TOKEN_BASE), (10, frames.AUDIO_BASE)):
        token = f"<custom_token_{n}>"
        if token in vocab and vocab[token] != expected:
            raise ModelLoadError(f"tokenizer in {model_path}: {token} has id {vocab[token]}, Orpheus uses {expected}")
    logger.info(
        "Orpheus: tokenizer from %s (%d tokens) in %.1f s", model_path, len(tokenizer), time.perf_counter() - start
    )
    return tokenizer
