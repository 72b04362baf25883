"""The mlx-lm backend: Apple MLX through mlx-lm's ``stream_generate`` (Apple GPU, or CPU on Linux)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterator

from flashtts_core.backend import BackendConfig
from flashtts_core.sampling import SamplingParams

from .thread_stream import SerialThreadBackend

logger = logging.getLogger("flashtts.backend.mlx")


class MlxBackend(SerialThreadBackend):
    """mlx-lm ``load`` + ``stream_generate`` on the Hugging Face LLM folder.

    Sampling is mlx-lm's own: ``make_sampler`` (temperature, top-k, top-p) and logits processors
    (``make_logits_processors``' repetition penalty over the whole prompt and output, plus ours for
    ``allowed_token_ids`` and ``min_tokens``). mlx-lm generates one sequence at a time and its random
    state is global, so requests run one after another in the backend's worker thread, each seeded
    first; the event loop only awaits their tokens. Only ``stop_token_ids`` end a sequence: the
    tokenizer's stop set is swapped for the request's before it starts.
    """

    name = "mlx-lm"
    extra = "mlx"
    requires = ("mlx", "mlx_lm")
    description = "Apple MLX through mlx-lm (Apple silicon; cpu on Linux)"

    def __init__(self, model, tokenizer, config: BackendConfig):
        super().__init__(config.max_length, config.seed, "flashtts-mlx")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config

    @classmethod
    async def create(cls, config: BackendConfig) -> "MlxBackend":
        cls.check_available()
        return await asyncio.to_thread(cls._load, config)

    @classmethod
    def _load(cls, config: BackendConfig) -> "MlxBackend":
        import mlx.core as mx
        from mlx_lm import load

        if config.device == "cpu":
            mx.set_default_device(mx.cpu)
        start = time.perf_counter()
        model, tokenizer = load(str(config.model_path))
        logger.info(
            "mlx-lm backend: loaded %s on %s in %.1f s",
            config.model_path,
            mx.default_device(),
            time.perf_counter() - start,
        )
        return cls(model, tokenizer, config)

    def _generate(
        self, prompt_ids: list[int], params: SamplingParams, max_new: int, seed: int, cancel
    ) -> Iterator[int]:
        """Runs in the worker thread."""
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        mx.random.seed(seed % 2**32)
        sampler = make_sampler(
            temp=params.temperature,
            top_p=params.top_p if params.top_p < 1.0 else 0.0,
            top_k=max(params.top_k, 0),
        )
        processors = []
        if params.repetition_penalty != 1.0:
            processors += make_logits_processors(
                repetition_penalty=params.repetition_penalty, repetition_context_size=self.config.max_length
            )
        processors += _allowed_and_min_tokens(params, len(prompt_ids))
        self.tokenizer.eos_token_ids = set(params.stop_token_ids)
        generator = stream_generate(
            self.model,
            self.tokenizer,
            mx.array(prompt_ids),
            max_tokens=max_new,
            sampler=sampler,
            logits_processors=processors,
        )
        try:
            for response in generator:
                if cancel.is_set():
                    return
                # Each token comes once with finish_reason None, except the one that reaches
                # max_tokens, which only the final "length" response carries.
                if response.finish_reason is None or response.finish_reason == "length":
                    yield int(response.token)
        finally:
            generator.close()

    async def close(self) -> None:
        await super().close()
        self.model = None


def _allowed_and_min_tokens(params: SamplingParams, prompt_len: int) -> list:
    """mlx-lm logits processors ``(tokens, logits) -> logits`` for ``allowed_token_ids`` and ``min_tokens``."""
    import mlx.core as mx

    processors = []
    if params.allowed_token_ids is not None:
        allowed_ids = mx.array(sorted({*params.allowed_token_ids, *params.stop_token_ids}))
        masks = {}  # built on first use, when the vocabulary size and dtype are known

        def allowed(tokens, logits):
            key = (logits.shape[-1], logits.dtype)
            if key not in masks:
                mask = mx.full((logits.shape[-1],), -mx.inf, dtype=logits.dtype)
                mask[allowed_ids] = 0
                masks[key] = mask
            return logits + masks[key]

        processors.append(allowed)
    if params.min_tokens > 0 and params.stop_token_ids:
        stop_ids = mx.array(sorted(set(params.stop_token_ids)))

        def min_tokens(tokens, logits):
            if tokens.size - prompt_len < params.min_tokens:
                logits[:, stop_ids] = -mx.inf
            return logits

        processors.append(min_tokens)
    return processors
