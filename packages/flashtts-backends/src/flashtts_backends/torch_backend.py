"""The torch backend: a transformers causal LM, generation in worker threads, streamed token by token."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

from flashtts_core.backend import BackendConfig, LLMBackend
from flashtts_core.errors import InvalidRequest
from flashtts_core.options import resolve_device, resolve_dtype
from flashtts_core.sampling import SamplingParams

logger = logging.getLogger("flashtts.backend.torch")

_DONE = object()


class TorchBackend(LLMBackend):
    """transformers ``AutoModelForCausalLM`` on cpu, cuda or mps.

    Each sequence runs ``model.generate`` in a worker thread with our own sampler as the logits
    processor (so every SamplingParams field, including ``allowed_token_ids`` and a per-request seed,
    behaves as on the other backends) and a streamer that hands token ids to the event loop. When the
    consumer goes away, a stopping criterion ends the generation at the next step.
    """

    name = "torch"
    extra = "torch"
    requires = ("torch", "transformers")
    description = "transformers causal LM (cpu, cuda, mps)"

    def __init__(self, model, config: BackendConfig, device: str):
        self.model = model
        self.config = config
        self.device = device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        workers = max(1, min(config.batch_size, 32))
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flashtts-torch")
        self._slots = asyncio.Semaphore(workers)
        self._seeds = random.Random(config.seed)
        self.active = 0

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
        start = time.perf_counter()
        logger.info("torch backend: loading %s on %s as %s", config.model_path, device, str(dtype).replace("torch.", ""))
        model = AutoModelForCausalLM.from_pretrained(
            str(config.model_path), dtype=dtype, attn_implementation=config.attn_implementation
        )
        model.to(device).eval()
        torch.manual_seed(config.seed)
        params = sum(p.numel() for p in model.parameters())
        logger.info(
            "torch backend: loaded %s (%.1fM parameters, %s, %s attention) in %.1f s",
            type(model).__name__, params / 1e6, str(dtype).replace("torch.", ""), config.attn_implementation,
            time.perf_counter() - start,
        )
        return cls(model, config, device)

    def _max_new(self, prompt_ids: list[int], params: SamplingParams) -> int:
        room = self.config.max_length - len(prompt_ids)
        if room <= 0:
            raise InvalidRequest(
                f"prompt of {len(prompt_ids)} tokens does not fit max_length {self.config.max_length}", param="text"
            )
        return min(params.max_tokens, room)

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[list[int]]:
        max_new = self._max_new(prompt_ids, params)
        if not prompt_ids:
            raise InvalidRequest("empty prompt")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        seed = params.seed if params.seed is not None else self._seeds.randrange(2**63)

        def emit(item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        async with self._slots:
            self.active += 1
            job = loop.run_in_executor(self._executor, self._run, prompt_ids, params, max_new, seed, emit, cancel)
            try:
                while True:
                    item = await queue.get()
                    if item is _DONE:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancel.set()
                self.active -= 1
                # Wait (without blocking the loop) for the thread to notice, so the slot is really free.
                try:
                    await asyncio.shield(asyncio.wrap_future(job) if not isinstance(job, asyncio.Future) else job)
                except BaseException:
                    pass

    def _run(self, prompt_ids, params: SamplingParams, max_new: int, seed: int, emit, cancel: threading.Event) -> None:
        try:
            self._generate(prompt_ids, params, max_new, seed, emit, cancel)
        except BaseException as exc:  # handed to the consumer, never lost in the thread
            emit(exc)
        finally:
            emit(_DONE)

    def _generate(self, prompt_ids, params: SamplingParams, max_new: int, seed: int, emit, cancel) -> None:
        import torch
        from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        from .torch_sampler import TorchSampler

        sampler = TorchSampler(params, self.vocab_size, self.device, seed)
        stop_ids = set(params.stop_token_ids)

        class Pick(LogitsProcessor):
            # Our sampler chooses; generate() then takes the argmax of a one-hot row.
            def __call__(self, input_ids, scores):
                choice = sampler(scores[0], input_ids[0])
                out = torch.full_like(scores, float("-inf"))
                out[0, choice] = 0.0
                return out

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        class Streamer(BaseStreamer):
            def __init__(self):
                self.prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                ids = [int(t) for t in value.reshape(-1).tolist() if int(t) not in stop_ids]
                if ids and not cancel.is_set():
                    emit(ids)

            def end(self):
                pass

        gen_config = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new,
            eos_token_id=sorted(stop_ids) or None,
            pad_token_id=(sorted(stop_ids)[0] if stop_ids else 0),
            cache_implementation=self.config.cache_implementation,
        )
        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=gen_config,
                logits_processor=LogitsProcessorList([Pick()]),
                stopping_criteria=StoppingCriteriaList([Cancelled()]),
                streamer=Streamer(),
            )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.model = None
