"""The llama-cpp backend: a GGUF model through llama-cpp-python, one sequence at a time per model."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from flashtts_core.backend import BackendConfig
from flashtts_core.errors import ModelLoadError
from flashtts_core.sampling import SamplingParams

from .thread_stream import SerialThreadBackend

logger = logging.getLogger("flashtts.backend.llama_cpp")


class LlamaCppBackend(SerialThreadBackend):
    """llama.cpp (``llama_cpp.Llama``) on a GGUF file: ``model_path`` is the file itself, or a folder
    holding one (the engine's LLM folder; write it with ``flashtts convert gguf MODEL_DIR``).

    One ``Llama`` object is not thread-safe and decodes one sequence at a time, so every request
    runs in the backend's single worker thread, in arrival order, while the event loop only awaits
    its tokens. llama.cpp evaluates, we sample: :class:`NumpySampler` applies every SamplingParams
    field (allowed ids, repetition penalty over prompt and output, top-k, top-p, a per-request
    seed) exactly as the other backends do. A request that shares a prefix with the previous one
    reuses that part of the KV cache.
    """

    name = "llama-cpp"
    extra = "llama-cpp"
    requires = ("llama_cpp",)
    description = "llama.cpp through llama-cpp-python (GGUF; cpu, cuda/metal builds)"

    def __init__(self, llm, config: BackendConfig):
        super().__init__(llm.n_ctx(), config.seed, "flashtts-llama-cpp")
        self.llm = llm
        self.config = config
        self.vocab_size = llm.n_vocab()

    @classmethod
    async def create(cls, config: BackendConfig) -> "LlamaCppBackend":
        cls.check_available()
        return await asyncio.to_thread(cls._load, config)

    @classmethod
    def _load(cls, config: BackendConfig) -> "LlamaCppBackend":
        from llama_cpp import Llama

        gguf = find_gguf(Path(config.model_path))
        # Offload every layer when a GPU is asked for (needs a CUDA/Metal build of llama-cpp-python).
        gpu = config.device not in ("cpu", "auto") or (config.device == "auto" and _has_gpu_offload())
        start = time.perf_counter()
        llm = Llama(
            model_path=str(gguf),
            n_ctx=config.max_length,
            n_batch=512,
            n_threads=os.cpu_count(),
            n_gpu_layers=-1 if gpu else 0,
            seed=config.seed,
            verbose=False,
        )
        logger.info(
            "llama-cpp backend: loaded %s (n_ctx %d, %s) in %.1f s",
            gguf,
            llm.n_ctx(),
            "gpu offload" if gpu else "cpu",
            time.perf_counter() - start,
        )
        return cls(llm, config)

    def _generate(
        self, prompt_ids: list[int], params: SamplingParams, max_new: int, seed: int, cancel
    ) -> Iterator[int]:
        """Runs in the worker thread: evaluate the prompt, then sample and feed back one token at a time."""
        import numpy as np
        from llama_cpp import llama_get_logits_ith

        from .numpy_sampler import NumpySampler

        llm = self.llm
        sampler = NumpySampler(params, self.vocab_size, seed)
        sampler.observe(prompt_ids)
        stop_ids = set(params.stop_token_ids)
        # Keep the cached prefix shared with the previous request; re-evaluate at least one token so
        # the logits are this prompt's.
        cached = llm.input_ids[: llm.n_tokens]
        shared = 0
        for a, b in zip(cached, prompt_ids[:-1]):
            if a != b:
                break
            shared += 1
        llm.n_tokens = shared
        llm.eval(prompt_ids[shared:])
        for _ in range(max_new):
            if cancel.is_set():
                return
            logits = np.ctypeslib.as_array(llama_get_logits_ith(llm.ctx, -1), shape=(self.vocab_size,))
            token = sampler(logits)
            if token in stop_ids:
                return
            yield token
            sampler.observe([token])
            llm.eval([token])

    async def close(self) -> None:
        # Queued requests are dropped; a running one ends at its next token once its consumer goes.
        await super().close()
        await asyncio.to_thread(self.llm.close)
        self.llm = None


def find_gguf(path: Path) -> Path:
    """The GGUF file at ``path``, or the single (or f32/f16-preferred) one inside the folder."""
    if path.is_file():
        return path
    files = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if not files:
        raise ModelLoadError(
            f"no .gguf file in {path}: write one with `flashtts convert gguf MODEL_DIR` or pass the file's path"
        )
    if len(files) == 1:
        return files[0]
    for preferred in ("f16", "f32"):
        for file in files:
            if file.stem.lower().endswith(preferred):
                logger.info("llama-cpp backend: %d GGUF files in %s, using %s", len(files), path, file.name)
                return file
    raise ModelLoadError(f"several .gguf files in {path} ({', '.join(f.name for f in files)}): pass the file's path")


def _has_gpu_offload() -> bool:
    from llama_cpp import llama_supports_gpu_offload

    return bool(llama_supports_gpu_offload())
