"""The TensorRT-LLM backend: the LLM API (``tensorrt_llm.LLM``) and its streamed ``generate_async``."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import AsyncIterator

from flashtts_core.backend import BackendConfig, LLMBackend
from flashtts_core.errors import BackendUnavailable, InvalidRequest, ModelLoadError
from flashtts_core.sampling import SamplingParams

from .options import TensorRTOptions

logger = logging.getLogger("flashtts.backend.tensorrt")


class TensorRTBackend(LLMBackend):
    """TensorRT-LLM's ``LLM`` on a built engine directory (``--llm_tensorrt_path``, by default
    ``{model_path}/tensorrt-engine``), or on the Hugging Face LLM folder when no engine was built.

    Each request is ``LLM.generate_async(prompt_ids, SamplingParams(...), streaming=True)``; its
    result is iterated as it grows, and only ``token_ids_diff`` (the new ids) is passed on, so the
    stream really streams. ``allowed_token_ids`` and ``min_tokens`` go through a per-request
    ``LogitsProcessor``; a consumer that stops calls ``abort()`` on its request.

    TensorRT-LLM needs CUDA; this adapter is tested against a stand-in of the documented API, not
    the real engine (see the README's support table).
    """

    name = "tensorrt-llm"
    extra = "tensorrt"
    requires = ("tensorrt_llm",)
    description = "TensorRT-LLM LLM API (cuda)"
    tensor_parallel = True

    def __init__(self, llm, config: BackendConfig):
        self.llm = llm
        self.config = config
        self.active = 0
        # TensorRT-LLM seeds an unseeded request with 0, so every one would sample alike: draw one.
        self._seeds = random.Random(config.seed)

    @classmethod
    async def create(cls, config: BackendConfig) -> "TensorRTBackend":
        cls.check_available()
        if config.device == "cpu":
            raise BackendUnavailable("backend 'tensorrt-llm' runs on CUDA GPUs only; choose another --backend for cpu")
        from tensorrt_llm import LLM
        from tensorrt_llm.llmapi import KvCacheConfig

        model = _engine_or_checkpoint(config)
        start = time.perf_counter()
        # Building the executor loads the engine onto the GPU: keep it off the loop.
        llm = await asyncio.to_thread(
            LLM,
            model=str(model),
            skip_tokenizer_init=True,
            tensor_parallel_size=config.tensor_parallel_size,
            kv_cache_config=KvCacheConfig(
                free_gpu_memory_fraction=TensorRTOptions.of(config.options).llm_gpu_memory_utilization
            ),
        )
        logger.info("tensorrt-llm backend: %s ready in %.1f s", model, time.perf_counter() - start)
        return cls(llm, config)

    def _sampling_params(self, prompt_ids: list[int], params: SamplingParams):
        from tensorrt_llm import SamplingParams as TrtSamplingParams

        room = self.prompt_room(prompt_ids, self.config.max_length)
        greedy = params.temperature == 0
        processor = (
            _AllowedTokenIds(params, len(prompt_ids))
            if (params.allowed_token_ids is not None or (params.min_tokens and params.stop_token_ids))
            else None
        )
        return TrtSamplingParams(
            max_tokens=min(params.max_tokens, room),
            # Greedy is top-k 1; TensorRT-LLM wants a positive temperature.
            temperature=None if greedy else params.temperature,
            top_k=1 if greedy else max(params.top_k, 0),
            top_p=params.top_p,
            repetition_penalty=params.repetition_penalty,
            stop_token_ids=list(params.stop_token_ids) or None,
            # No end id: only the engine's stop ids end a sequence, as on every other backend.
            end_id=-1,
            seed=params.seed if params.seed is not None else self._seeds.randrange(2**32),
            logits_processor=processor,
            detokenize=False,
        )

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[list[int]]:
        if not prompt_ids:
            raise InvalidRequest("empty prompt")
        sampling = self._sampling_params(prompt_ids, params)
        stop_ids = set(params.stop_token_ids)
        request = self.llm.generate_async(list(prompt_ids), sampling, streaming=True)
        self.active += 1
        try:
            async for output in request:
                completion = output.outputs[0]
                new = list(completion.token_ids_diff)
                if completion.finish_reason == "stop" and new and new[-1] in stop_ids:
                    new.pop()  # the matched stop id is not part of our output
                if new:
                    yield new
        finally:
            if not request.finished:
                # The consumer went away: free the sequence's slot in the executor now.
                request.abort()
            self.active -= 1

    async def close(self) -> None:
        await asyncio.to_thread(self.llm.shutdown)
        self.llm = None


def _engine_or_checkpoint(config: BackendConfig) -> Path:
    """The built engine directory if there is one, else the Hugging Face folder (TensorRT-LLM's
    PyTorch flow runs it directly)."""
    options = config.options
    engine = TensorRTOptions.of(options).engine_dir(getattr(options, "model_path", None))
    if engine is not None and (engine / "config.json").is_file():
        return engine
    if engine is not None and engine.exists():
        raise ModelLoadError(f"{engine} is not a TensorRT-LLM engine directory (no config.json)")
    logger.info(
        "tensorrt-llm backend: no engine at %s, running %s through TensorRT-LLM's PyTorch flow",
        engine,
        config.model_path,
    )
    return Path(config.model_path)


class _AllowedTokenIds:
    """A TensorRT-LLM ``LogitsProcessor``: masks every id outside ``allowed_token_ids`` (stop ids
    always stay legal) and the stop ids until ``min_tokens`` are out. Modifies logits in place, as
    the API asks."""

    def __init__(self, params: SamplingParams, prompt_len: int):
        self.allowed = None
        if params.allowed_token_ids is not None:
            self.allowed = sorted({*params.allowed_token_ids, *params.stop_token_ids})
        self.stop_ids = sorted(set(params.stop_token_ids))
        self.min_tokens = params.min_tokens
        self.prompt_len = prompt_len
        self._mask = None

    def __call__(self, req_id, logits, token_ids, stream_ptr, client_id) -> None:
        import torch

        if self.allowed is not None:
            if self._mask is None or self._mask.device != logits.device:
                self._mask = torch.full((logits.shape[-1],), float("-inf"), device=logits.device)
                self._mask[torch.tensor(self.allowed, device=logits.device)] = 0.0
            logits += self._mask.to(logits.dtype)
        generated = len(token_ids[0]) - self.prompt_len
        if self.min_tokens and generated < self.min_tokens:
            logits[..., self.stop_ids] = float("-inf")
