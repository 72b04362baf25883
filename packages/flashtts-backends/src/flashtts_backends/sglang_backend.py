"""The SGLang backend: ``sglang.Engine`` and its ``async_generate`` with token ids, streamed."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import AsyncIterator

from flashtts_core.backend import BackendConfig, LLMBackend
from flashtts_core.errors import InvalidRequest
from flashtts_core.sampling import SamplingParams

from .options import SglangOptions

logger = logging.getLogger("flashtts.backend.sglang")


class SglangBackend(LLMBackend):
    """SGLang's offline ``Engine`` (RadixAttention, continuous batching of ``llm_batch_size`` requests).

    Requests go through ``Engine.async_generate(input_ids=..., sampling_params=..., stream=True,
    rid=...)``. In SGLang's default streaming mode every chunk carries the *whole* output so far in
    ``output_ids``; we yield only what is new. ``allowed_token_ids`` and ``min_tokens`` are applied
    by a custom logit processor (SGLang has no native allowed-ids list, and its ``min_new_tokens``
    needs a tokenizer, which we skip); the engine starts with ``enable_custom_logit_processor``.
    A consumer that stops aborts its request (``tokenizer_manager.abort_request``).

    SGLang needs CUDA; this adapter is tested against a stand-in of the documented API, not the
    real engine (see the README's support table).
    """

    name = "sglang"
    extra = "sglang"
    requires = ("sglang",)
    description = "SGLang engine (cuda)"
    tensor_parallel = True

    def __init__(self, engine, config: BackendConfig, processor: str):
        self.engine = engine
        self.config = config
        self._processor = processor  # the serialized custom logit processor
        self._requests: set[str] = set()

    @property
    def active(self) -> int:
        """Requests this backend has in the engine right now."""
        return len(self._requests)

    @classmethod
    async def create(cls, config: BackendConfig) -> "SglangBackend":
        cls.check_available()
        import sglang

        device, _, index = (config.device if config.device != "auto" else "cuda").partition(":")
        kwargs = dict(
            model_path=str(config.model_path),
            skip_tokenizer_init=True,
            dtype=config.torch_dtype,
            context_length=config.max_length,
            max_running_requests=config.batch_size,
            mem_fraction_static=SglangOptions.of(config.options).llm_gpu_memory_utilization,
            tp_size=config.tensor_parallel_size,
            device=device,
            random_seed=config.seed,
            enable_custom_logit_processor=True,
            log_level="error",
        )
        if index:
            kwargs["base_gpu_id"] = int(index)
        start = time.perf_counter()
        # Engine() starts its scheduler processes and waits for them: keep that off the loop.
        engine = await asyncio.to_thread(sglang.Engine, **kwargs)
        logger.info("sglang backend: engine ready for %s in %.1f s", config.model_path, time.perf_counter() - start)
        return cls(engine, config, _allowed_ids_processor().to_str())

    def _sampling_params(self, prompt_ids: list[int], params: SamplingParams) -> dict:
        room = self.prompt_room(prompt_ids, self.config.max_length)
        sampling = {
            "max_new_tokens": min(params.max_tokens, room),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k if params.top_k > 0 else -1,
            "repetition_penalty": params.repetition_penalty,
            "stop_token_ids": list(params.stop_token_ids),
            # Only the engine's stop ids end a sequence, as on every other backend.
            "ignore_eos": True,
        }
        if params.seed is not None:
            sampling["sampling_seed"] = params.seed
        custom = {}
        if params.allowed_token_ids is not None:
            custom["allowed_token_ids"] = sorted({*params.allowed_token_ids, *params.stop_token_ids})
        if params.min_tokens > 0 and params.stop_token_ids:
            custom["min_tokens"] = params.min_tokens
            custom["stop_token_ids"] = list(params.stop_token_ids)
        if custom:
            sampling["custom_params"] = custom
        return sampling

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[list[int]]:
        if not prompt_ids:
            raise InvalidRequest("empty prompt")
        sampling = self._sampling_params(prompt_ids, params)
        stop_ids = set(params.stop_token_ids)
        rid = uuid.uuid4().hex
        self._requests.add(rid)
        finished = False
        sent = 0
        try:
            chunks = await self.engine.async_generate(
                input_ids=list(prompt_ids),
                sampling_params=sampling,
                custom_logit_processor=self._processor if "custom_params" in sampling else None,
                stream=True,
                rid=rid,
            )
            async for chunk in chunks:
                output = list(chunk["output_ids"])
                reason = chunk["meta_info"].get("finish_reason")
                if reason is not None:
                    finished = True
                    if reason.get("type") == "stop" and output and output[-1] in stop_ids:
                        output.pop()  # SGLang returns the matched stop id; our contract does not
                new, sent = output[sent:], max(sent, len(output))
                if new:
                    yield new
        finally:
            if not finished:
                # The consumer went away: free the request's slot in the scheduler now.
                self.engine.tokenizer_manager.abort_request(rid=rid)
            self._requests.discard(rid)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.shutdown)
        self.engine = None


def _allowed_ids_processor():
    """SGLang's CustomLogitProcessor for ``allowed_token_ids`` and ``min_tokens``, per batch row.

    Defined here rather than at module level because it subclasses a class of sglang, which a
    backend module must not import at import time; SGLang serializes it (by value) with ``to_str``.
    """
    from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor

    class AllowedTokenIdsProcessor(CustomLogitProcessor):
        def __call__(self, logits, custom_param_list=None):
            for row, param in enumerate(custom_param_list or []):
                if not param:
                    continue
                allowed = param.get("allowed_token_ids")
                if allowed is not None:
                    keep = logits[row, allowed].clone()
                    logits[row, :] = -float("inf")
                    logits[row, allowed] = keep
                req = param.get("__req__")
                if param.get("min_tokens") and req is not None and len(req.output_ids) < param["min_tokens"]:
                    logits[row, param["stop_token_ids"]] = -float("inf")
            return logits

    return AllowedTokenIdsProcessor
