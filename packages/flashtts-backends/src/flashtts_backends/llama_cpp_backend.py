"""The llama-cpp backend: a GGUF model through llama-cpp-python, concurrent requests batched."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Optional

from flashtts_core.backend import BackendConfig, LLMBackend
from flashtts_core.errors import InvalidRequest, ModelLoadError
from flashtts_core.sampling import SamplingParams

from .options import LlamaCppOptions
from .scheduled_stream import shares_compute_thread, stream_scheduled

if TYPE_CHECKING:
    from .llama_cpp_batching import ReducedVocabulary

logger = logging.getLogger("flashtts.backend.llama_cpp")

# Sequence ids per context: concurrent requests beyond this wait for a slot.
MAX_SEQUENCES = 64
# Tokens per llama_decode call (longer prompts are evaluated in chunks of this size).
N_BATCH = 512


class LlamaCppBackend(LLMBackend):
    """llama.cpp on a GGUF file (f32, f16, q8_0, …): ``model_path`` is the file itself, or a folder
    holding one (the engine's LLM folder; write it with ``flashtts convert gguf MODEL_DIR``).

    The model is loaded through llama.cpp's C API (llama-cpp-python's bindings), not the
    one-sequence ``Llama`` class: one context holds up to ``batch_size`` (at most
    :data:`MAX_SEQUENCES`) sequence ids, and a scheduler thread (:mod:`llama_cpp_batching`) decodes
    every running request in one ``llama_batch`` per step, so concurrent requests share one read of
    the weights. llama.cpp evaluates, we sample: :class:`NumpySampler` applies every SamplingParams
    field exactly as the other backends do. On CPU it runs one thread per physical core, and loads
    without llama.cpp's repacked ("extra") weight buffers, whose AMX path crashes on the first q8_0
    decode in llama-cpp-python 0.3.36.

    When the engine declares the tokens it can emit (``BackendConfig.output_token_ids``) and
    ``--llm_gguf_head reduced`` (the default), the model loaded is the GGUF cut to those rows
    (:mod:`gguf_reduce`, written once): the output head, ~30% of a Spark decode step, shrinks to
    them. The kept logits are computed from the same weight bytes, so greedy ids are the full
    model's; prompts are fed as embedding rows of the full file.
    """

    name = "llama-cpp"
    extra = "llama-cpp"
    requires = ("llama_cpp",)
    description = "llama.cpp through llama-cpp-python (GGUF: f32/f16/q8_0/…; batched; cpu, cuda/metal builds)"
    weights_dtype = "weights as in the GGUF file"  # not --torch_dtype (progress lines)

    def __init__(
        self,
        model,
        ctx,
        config: BackendConfig,
        n_ctx: int,
        n_seq: int,
        n_batch: int,
        gguf: Path,
        reduced: Optional[ReducedVocabulary] = None,
        gpu: bool = False,
    ):
        import llama_cpp as lc

        from .llama_cpp_batching import LlamaBatchScheduler

        self._model, self._ctx = model, ctx
        self.config = config
        self.gguf = gguf
        self.context_length = n_ctx
        rows = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
        self.reduced = reduced
        # Token ids a prompt may hold: the full vocabulary, also when the model's rows are fewer.
        self.vocab_size = reduced.n_vocab if reduced is not None else rows
        self._scheduler = LlamaBatchScheduler(ctx, rows, n_ctx, n_seq, n_batch, reduced)
        if not gpu and shares_compute_thread(config):
            self.compute_executor = self._scheduler.executor  # the codec runs between decode steps
        self._seeds = random.Random(config.seed)

    @property
    def active(self) -> int:
        """Sequences running or waiting for a slot."""
        return self._scheduler.active

    @classmethod
    async def create(cls, config: BackendConfig) -> "LlamaCppBackend":
        cls.check_available()
        return await asyncio.to_thread(cls._load, config)

    @classmethod
    def _load(cls, config: BackendConfig) -> "LlamaCppBackend":
        import llama_cpp as lc

        gguf = find_gguf(Path(config.model_path))
        reduced = None
        model_file = gguf
        if config.output_token_ids is not None and LlamaCppOptions.of(config.options).llm_gguf_head == "reduced":
            reduced, model_file = _reduced_vocabulary(gguf, config.output_token_ids)
        # Offload every layer when a GPU is asked for (needs a CUDA/Metal build of llama-cpp-python).
        gpu = config.device not in ("cpu", "auto") or (config.device == "auto" and _has_gpu_offload())
        start = time.perf_counter()
        # llama-cpp-python routes llama.cpp's log (every tensor and graph input at load) through
        # this logger; the Llama class quiets it with verbose=False, the C API does not.
        import llama_cpp.llama  # noqa: F401  (installs that log callback)

        library_log = logging.getLogger("llama-cpp-python")
        if library_log.level == logging.NOTSET:
            library_log.setLevel(logging.ERROR)
        lc.llama_backend_init()
        model_params = lc.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if gpu else 0
        if not gpu:
            model_params.use_extra_bufts = False
        model = lc.llama_model_load_from_file(str(model_file).encode(), model_params)
        if not model:
            raise ModelLoadError(f"llama.cpp could not load {model_file}")
        n_seq = max(1, min(config.batch_size, MAX_SEQUENCES, lc.llama_max_parallel_sequences()))
        n_ctx = config.max_length
        threads = physical_cores()
        params = lc.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = N_BATCH
        params.n_ubatch = N_BATCH
        params.n_seq_max = n_seq
        # One pool of cells for every sequence (admission reserves each one's worst case).
        params.kv_unified = True
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        ctx = lc.llama_init_from_model(model, params)
        if not ctx:
            lc.llama_model_free(model)
            raise ModelLoadError(f"llama.cpp could not create a context for {gguf} (n_ctx {n_ctx}, {n_seq} sequences)")
        logger.info(
            "llama-cpp backend: loaded %s (n_ctx %d shared by up to %d sequences, %d threads, %s; %s) in %.1f s",
            model_file,
            n_ctx,
            n_seq,
            threads,
            "gpu offload" if gpu else "cpu",
            f"output head over {len(reduced.kept)} of {reduced.n_vocab} rows" if reduced else "full output head",
            time.perf_counter() - start,
        )
        return cls(model, ctx, config, n_ctx, n_seq, N_BATCH, gguf, reduced, gpu)

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[list[int]]:
        from .llama_cpp_batching import DONE, Sequence
        from .numpy_sampler import NumpySampler

        if not prompt_ids:
            raise InvalidRequest("empty prompt")
        room = self.prompt_room(prompt_ids, self.context_length)
        if any(not 0 <= t < self.vocab_size for t in prompt_ids):
            raise InvalidRequest(f"prompt token ids must be in [0, {self.vocab_size})")
        kept = None
        if self.reduced is not None:
            kept = self.reduced.kept
            wanted = None if params.allowed_token_ids is None else {*params.allowed_token_ids, *params.stop_token_ids}
            if wanted is None or any(t not in self.reduced.row for t in wanted if 0 <= t < self.vocab_size):
                raise InvalidRequest(
                    "this llama-cpp model computes only the output rows the engine declared; the request "
                    "allows other tokens (start with --llm_gguf_head full)"
                )
        seed = params.seed if params.seed is not None else self._seeds.randrange(2**63)

        def make_sequence(emit):
            return Sequence(
                prompt_ids=list(prompt_ids),
                params=params,
                max_new=min(params.max_tokens, room),
                sampler=NumpySampler(params, self.vocab_size, seed, logit_ids=kept),
                emit=emit,
            )

        # Closed explicitly, so a consumer that leaves frees its slot now, not at garbage collection.
        async with contextlib.aclosing(stream_scheduled(self._scheduler, make_sequence, DONE)) as stream:
            async for tokens in stream:
                yield tokens

    async def close(self) -> None:
        import llama_cpp as lc

        if self._ctx is None:
            return
        await asyncio.to_thread(self._scheduler.close)
        lc.llama_free(self._ctx)
        lc.llama_model_free(self._model)
        self._ctx = self._model = None
        if self.reduced is not None:
            self.reduced.close()


def _reduced_vocabulary(gguf: Path, output_token_ids) -> tuple[ReducedVocabulary, Path]:
    """The reduced GGUF of ``gguf`` for these ids (written on first use) and its row map."""
    import numpy as np

    from .gguf_reduce import EmbeddingRows, reduced_gguf
    from .llama_cpp_batching import ReducedVocabulary

    table = EmbeddingRows(gguf)
    kept = sorted({int(t) for t in output_token_ids if 0 <= int(t) < table.n_vocab})
    if not kept:
        table.close()
        raise ModelLoadError(f"none of the engine's output token ids is in {gguf}'s vocabulary")
    start = time.perf_counter()
    try:
        path = reduced_gguf(gguf, kept)
    except (OSError, ValueError) as error:
        table.close()
        raise ModelLoadError(f"could not write the reduced GGUF of {gguf}: {error}") from error
    logger.info(
        "llama-cpp backend: output head over %d of %d vocabulary rows (%s, %.1f s; --llm_gguf_head full to turn off)",
        len(kept),
        table.n_vocab,
        path,
        time.perf_counter() - start,
    )
    return ReducedVocabulary(np.asarray(kept, dtype=np.int64), table, table.n_embd, table.n_vocab), path


def physical_cores() -> int:
    """CPU cores this process may use, counting each physical core once (llama.cpp runs best with
    one thread per core; a hyperthread sibling adds contention, not bandwidth)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # macOS: Apple silicon has no SMT siblings
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
            )
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


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
