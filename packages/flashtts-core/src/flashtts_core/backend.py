"""The LLM backend contract: token ids in, token ids out, streamed, cancellable."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar, Optional, Sequence

from .errors import BackendUnavailable, InvalidRequest
from .sampling import SamplingParams


@dataclass
class BackendConfig:
    """How to load one causal LM. Engines fill ``model_path`` with their LLM folder."""

    model_path: Path
    device: str = "auto"
    torch_dtype: str = "auto"
    max_length: int = 32768
    # GPUs the engine shards the model over (for backends whose ``tensor_parallel`` is True).
    tensor_parallel_size: int = 1
    batch_size: int = 256
    seed: int = 0
    # The options the config came from (EngineOptions or the server's settings): a backend reads its
    # own (PluginOptions.of(config.options): torch's --llm_quantization, vllm's
    # --llm_gpu_memory_utilization …) from them.
    options: Any = None
    # Free-form settings an engine hands a backend it knows (no bundled backend reads any).
    extra: dict = field(default_factory=dict)
    # Every token id the engine will ever ask this LLM to emit (the union of all its
    # ``allowed_token_ids`` and stop ids), or None. A backend may then compute the output head over
    # these rows only (llama-cpp loads a GGUF cut to them) and refuse requests that allow others.
    output_token_ids: Optional[tuple[int, ...]] = None

    @classmethod
    def from_options(cls, options, llm_path: Path, output_token_ids: Optional[Sequence[int]] = None) -> "BackendConfig":
        """The configuration for an engine's LLM folder, from the model options (EngineOptions)."""
        return cls(
            model_path=Path(llm_path),
            device=options.llm_device,
            torch_dtype=options.torch_dtype,
            max_length=options.max_length,
            tensor_parallel_size=options.llm_tensor_parallel_size,
            batch_size=options.llm_batch_size,
            seed=options.seed,
            options=options,
            output_token_ids=tuple(sorted(set(output_token_ids))) if output_token_ids is not None else None,
        )


@dataclass
class GenerationOutput:
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop id), "length" (max_tokens / max_length) or "cancelled"
    prompt_tokens: int = 0


class LLMBackend(ABC):
    """An inference engine for the LLM part of a TTS model.

    Subclasses set ``name`` (the ``--backend`` value), ``extra`` (the pip extra that installs its
    library) and ``requires`` (importable module names checked by :meth:`check_available`).

    ``stream`` is an async generator of token-id deltas. When the consumer stops iterating (closes the
    generator, or its task is cancelled), the backend must stop generating and free the sequence's
    slot. Model work never runs on the event loop: use an async engine or a worker thread.
    """

    name: ClassVar[str]
    extra: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # True where ``BackendConfig.tensor_parallel_size`` shards the model over that many GPUs.
    tensor_parallel: ClassVar[bool] = False
    # What the weights load as where the backend, not ``--torch_dtype``, decides (progress lines,
    # :func:`flashtts_core.options.llm_dtype_name`); declared only, so a wrapper forwards it.
    weights_dtype: ClassVar[str]
    # Sequences generating or waiting in this backend now (0 where a backend does not count them).
    active: int = 0
    # Where an engine runs its own model work (codec) to share the backend's compute thread: set by
    # backends that decode on a CPU thread of this process (``--cpu_compute_thread shared``); None:
    # the engine's own threads.
    compute_executor: Optional[Executor] = None

    def executor_for(self, device: str) -> Optional[Executor]:
        """Where an engine runs its model work on ``device`` (resolved: ``cpu``, ``cuda:0`` …): the
        backend's compute thread for work on a CPU, None (the engine's own threads) elsewhere."""
        return self.compute_executor if device == "cpu" else None

    @staticmethod
    def prompt_room(prompt_ids: list[int], context_length: int) -> int:
        """How many tokens may follow the prompt in a context of ``context_length``; a 4xx (naming
        ``max_length``) when the prompt alone fills it."""
        room = context_length - len(prompt_ids)
        if room <= 0:
            raise InvalidRequest(
                f"prompt of {len(prompt_ids)} tokens does not fit max_length {context_length}", param="text"
            )
        return room

    @classmethod
    def check_options(cls, options) -> None:
        """Refuse model options this backend would silently ignore (EngineOptions). The plugins'
        own flags are checked by :meth:`flashtts_core.plugins.PluginManager.check_options`."""
        cls.check_tensor_parallel(options.llm_tensor_parallel_size)

    @classmethod
    def check_tensor_parallel(cls, size: int, sharding: Sequence[str] = ()) -> None:
        """Refuse a tensor-parallel size this backend would silently ignore (it runs on one device).
        ``sharding``: the installed backends that do shard (``tensor_parallel``), for the message."""
        if size > 1 and not cls.tensor_parallel:
            needs = " or ".join(filter(None, [", ".join(sharding[:-1]), *sharding[-1:]]))
            raise InvalidRequest(
                f"backend {cls.name!r} runs the LLM on one device; --llm_tensor_parallel_size {size} needs "
                f"{needs or 'a backend that shards the LLM'} (or use --replicas for one model copy per GPU)",
                param="llm_tensor_parallel_size",
            )

    @classmethod
    def check_available(cls) -> None:
        """Raise BackendUnavailable, naming the extra to install, if a required library is missing."""
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendUnavailable(
                f"backend {cls.name!r} needs {', '.join(missing)}: "
                f'pip install "flashtts-backends[{cls.extra or cls.name}]"'
            )

    @classmethod
    @abstractmethod
    async def create(cls, config: BackendConfig) -> "LLMBackend":
        """Load the model and return a ready backend."""

    @abstractmethod
    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[list[int]]:
        """Yield newly generated token ids (stop ids excluded) until a stop id, max_tokens or max_length."""

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> GenerationOutput:
        """The whole sequence at once: by default the drained stream."""
        ids: list[int] = []
        async for delta in self.stream(prompt_ids, params):
            ids.extend(delta)
        reason = "length" if len(ids) >= params.max_tokens else "stop"
        return GenerationOutput(token_ids=ids, finish_reason=reason, prompt_tokens=len(prompt_ids))

    async def close(self) -> None:
        """Release the model and any worker."""
