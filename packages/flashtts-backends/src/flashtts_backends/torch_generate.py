"""Per-sequence decoding with ``model.generate`` for a ``--cache_implementation`` (static,
offloaded_static, sliding_window, …): transformers builds that cache, our sampler still picks every
token. Used instead of continuous batching when the user asks for a cache strategy, since the
batched path manages its own dynamic cache."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from .torch_batching import DONE, Sequence

logger = logging.getLogger("flashtts.backend.torch")


class GenerateRunner:
    """Same interface as BatchScheduler (submit / wake / close / active); one worker thread per
    concurrent sequence, up to ``max_batch``."""

    def __init__(self, model, device: str, max_batch: int, cache_implementation: str):
        self.model = model
        self.device = device
        self.cache_implementation = cache_implementation
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(max_batch, 16)), thread_name_prefix="flashtts-torch-gen")
        self._lock = threading.Lock()
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    def submit(self, seq: Sequence) -> None:
        self._pool.submit(self._run, seq)

    def wake(self) -> None:
        """Cancellation is polled by a stopping criterion at every step; nothing to wake."""

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, seq: Sequence) -> None:
        with self._lock:
            self._active += 1
        try:
            if not seq.cancel.is_set():
                self._generate(seq)
        except BaseException as exc:
            logger.exception("torch backend: generate failed")
            seq.emit(exc)
        finally:
            with self._lock:
                self._active -= 1
            seq.emit(DONE)

    def _generate(self, seq: Sequence) -> None:
        from transformers import (
            GenerationConfig,
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
        )
        from transformers.generation.streamers import BaseStreamer

        stop_ids = set(seq.params.stop_token_ids)
        sampler = seq.sampler

        class Pick(LogitsProcessor):
            # Our sampler chooses; generate() then takes the argmax of a one-hot row.
            def __call__(self, input_ids, scores):
                choice = sampler(scores[0], input_ids[0])
                out = torch.full_like(scores, float("-inf"))
                out[0, choice] = 0.0
                return out

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), seq.cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        class Deliver(BaseStreamer):
            prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:
                    self.prompt_seen = True  # generate() first hands over the prompt
                    return
                ids = [int(t) for t in value.reshape(-1).tolist() if int(t) not in stop_ids]
                if ids and not seq.cancel.is_set():
                    seq.emit(ids)

            def end(self):
                pass

        extra = {}
        if str(self.device).startswith("cuda") and self.cache_implementation == "static":
            # The CUDA path: a static cache lets generate() compile the decode step with
            # torch.compile mode "reduce-overhead", which replays it as a CUDA graph (transformers
            # does this on CUDA by default; spelled out so the mode is ours). Not run here: no GPU.
            from transformers import CompileConfig

            extra["compile_config"] = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead")
        config = GenerationConfig(
            **extra,
            do_sample=False,
            num_beams=1,
            max_new_tokens=seq.max_new,
            eos_token_id=sorted(stop_ids) or None,
            pad_token_id=min(stop_ids) if stop_ids else 0,
            cache_implementation=self.cache_implementation,
            # Neutral values, so nothing from the checkpoint's generation_config.json acts on top of our sampler.
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_new_tokens=0,
        )
        ids = torch.tensor([seq.prompt_ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                generation_config=config,
                logits_processor=LogitsProcessorList([Pick()]),
                stopping_criteria=StoppingCriteriaList([Cancelled()]),
                streamer=Deliver(),
            )
