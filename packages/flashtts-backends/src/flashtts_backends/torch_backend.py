"""The torch backend: a transformers causal LM with continuous batching in a scheduler thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import AsyncIterator

from flashtts_core.backend import BackendConfig, LLMBackend
from flashtts_core.errors import InvalidRequest
from flashtts_core.loading import building_modules
from flashtts_core.options import resolve_device, resolve_dtype
from flashtts_core.sampling import SamplingParams

from .options import TorchOptions
from .scheduled_stream import shares_compute_thread, stream_scheduled

logger = logging.getLogger("flashtts.backend.torch")


class TorchBackend(LLMBackend):
    """transformers ``AutoModelForCausalLM`` on cpu, cuda or mps.

    Concurrent requests share forward passes: a scheduler thread (``torch_batching``) runs one
    batched decode step over every active sequence, up to ``llm_batch_size`` of them, and samples
    each row with its own :class:`TorchSampler` (so every SamplingParams field, including
    ``allowed_token_ids`` and a per-request seed, behaves as on the other backends). When the
    consumer goes away, its row leaves the batch at the next step.
    """

    name = "torch"
    extra = "torch"
    requires = ("torch", "transformers")
    description = "transformers causal LM with continuous batching (cpu, cuda, mps)"

    def __init__(self, model, config: BackendConfig, device: str, restrict_head: bool = True):
        """``restrict_head``: with ``allowed_token_ids``, compute logits over those rows only
        (:mod:`torch_head`); off, every step computes the full vocabulary (for comparisons)."""
        from .torch_batching import BatchScheduler
        from .torch_generate import GenerateRunner

        self.model = model
        self.config = config
        self.device = device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        cache_implementation = TorchOptions.of(config.options).cache_implementation
        if cache_implementation:
            # A requested cache strategy is transformers' to build: decode each sequence with generate().
            self._scheduler = GenerateRunner(model, device, config.batch_size, cache_implementation)
        else:
            self._scheduler = BatchScheduler(model, device, max_batch=config.batch_size, restrict_head=restrict_head)
            if device == "cpu" and shares_compute_thread(config):
                self.compute_executor = self._scheduler.executor  # the codec runs between decode steps
        self._seeds = random.Random(config.seed)

    @property
    def active(self) -> int:
        """Sequences holding a batch slot right now."""
        return self._scheduler.active

    @classmethod
    async def create(cls, config: BackendConfig) -> "TorchBackend":
        cls.check_available()
        return await asyncio.to_thread(cls._load, config)

    @classmethod
    def _load(cls, config: BackendConfig) -> "TorchBackend":
        import torch
        from transformers import AutoModelForCausalLM

        device = resolve_device(config.device)
        dtype = resolve_dtype(config.torch_dtype, device)
        # --llm_attn_implementation, --llm_quantization, --llm_linear, --cache_implementation
        own = TorchOptions.of(config.options)
        if own.cache_implementation:
            logger.info(
                "torch backend: cache_implementation=%s: sequences decode one per worker with generate() "
                "instead of continuous batching",
                own.cache_implementation,
            )
        start = time.perf_counter()
        logger.info(
            "torch backend: loading %s on %s as %s", config.model_path, device, str(dtype).replace("torch.", "")
        )
        with building_modules():  # from_pretrained sets the process-wide default dtype meanwhile
            model = AutoModelForCausalLM.from_pretrained(
                str(config.model_path), dtype=dtype, attn_implementation=own.llm_attn_implementation
            )
        model.to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        if own.llm_quantization == "int8":
            from .torch_quant import quantize_int8

            if not str(device).startswith("cpu"):
                raise InvalidRequest(
                    f"--llm_quantization int8 runs on the CPU only (the LLM is on {device})", param="llm_quantization"
                )
            quantize_int8(model)
        packed = cls._pack(model, own.llm_linear, device, dtype, quantized=bool(own.llm_quantization))
        torch.manual_seed(config.seed)
        logger.info(
            "torch backend: loaded %s (%.1fM parameters, %s%s, %s attention, batch %d) in %.1f s",
            type(model).__name__,
            params / 1e6,
            str(dtype).replace("torch.", ""),
            ", body int8" if own.llm_quantization else ", body prepacked for oneDNN" if packed else "",
            own.llm_attn_implementation,
            config.batch_size,
            time.perf_counter() - start,
        )
        return cls(model, config, device)

    @staticmethod
    def _pack(model, choice: str, device, dtype, quantized: bool) -> bool:
        """``--llm_linear``: prepack the body's linear layers for oneDNN (torch_packed); True when done."""
        if choice == "plain" or (choice == "auto" and quantized):
            return False
        from .torch_packed import can_pack, pack_linears

        if quantized:
            raise InvalidRequest(
                "--llm_linear packed is for bfloat16 weights; --llm_quantization int8 has its own kernel",
                param="llm_linear",
            )
        possible, why = can_pack(device, dtype)
        if not possible:
            if choice == "packed":
                raise InvalidRequest(f"--llm_linear packed: {why}", param="llm_linear")
            logger.info("torch backend: linear layers as loaded (%s)", why)
            return False
        pack_linears(model)
        return True

    def _max_new(self, prompt_ids: list[int], params: SamplingParams) -> int:
        room = self.prompt_room(prompt_ids, self.config.max_length)
        return min(params.max_tokens, room)

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[list[int]]:
        from .torch_batching import DONE, Sequence
        from .torch_sampler import TorchSampler

        if not prompt_ids:
            raise InvalidRequest("empty prompt")
        max_new = self._max_new(prompt_ids, params)
        seed = params.seed if params.seed is not None else self._seeds.randrange(2**63)

        def make_sequence(emit):
            return Sequence(
                prompt_ids=list(prompt_ids),
                params=params,
                max_new=max_new,
                sampler=TorchSampler(params, self.vocab_size, self.device, seed),
                emit=emit,
            )

        # Closed explicitly, so a consumer that leaves frees its slot now, not at garbage collection.
        async with contextlib.aclosing(stream_scheduled(self._scheduler, make_sequence, DONE)) as stream:
            async for tokens in stream:
                yield tokens

    async def close(self) -> None:
        await asyncio.to_thread(self._scheduler.close)
        self.model = None
