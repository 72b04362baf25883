"""The backends' own options (registered in plugin.py): declared here, not in flashtts-core.

A flag two backends read is declared by each with the same type and default (one flag, its value
reaches both): ``--llm_gpu_memory_utilization`` is vllm's, sglang's and tensorrt-llm's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from flashtts_core.options import AttnImpl, PluginOptions, option

GPU_MEMORY_HELP = "GPU memory share for vllm/sglang."


def gpu_memory_utilization() -> float:
    """``--llm_gpu_memory_utilization``, as each backend that reads it declares it."""
    return option(0.6, gt=0, le=1, help=GPU_MEMORY_HELP)


class TorchOptions(PluginOptions):
    """Options of the torch backend (``--llm_attn_implementation``, ``--llm_quantization``,
    ``--llm_linear``, ``--cache_implementation``)."""

    owner = "torch"
    refused_elsewhere = {
        "llm_quantization": "backend {backend!r} does not quantize the LLM itself; --llm_quantization {value} is "
        "for the torch backend (llama-cpp: convert to a q8_0 GGUF, `flashtts convert gguf`)",
    }

    llm_attn_implementation: AttnImpl = option("eager", help="LLM attention (torch backend).")
    llm_quantization: Optional[Literal["int8"]] = option(
        None,
        help="torch backend: int8 weight-only linear layers in the LLM body (one scale per output "
        "channel, bfloat16 activations); half the bytes a CPU decode step reads.",
    )
    llm_linear: Literal["auto", "packed", "plain"] = option(
        "auto",
        help="torch backend: the LLM body's bfloat16 linear layers prepacked for oneDNN on a CPU "
        "(packed), or as loaded (plain); auto packs a bfloat16 LLM on a CPU without --llm_quantization.",
    )
    cache_implementation: Optional[str] = option(
        None, help="KV-cache strategy for the torch backend: static, offloaded_static, sliding_window, …"
    )


class LlamaCppOptions(PluginOptions):
    """Options of the llama-cpp backend."""

    owner = "llama-cpp"

    llm_gguf_head: Literal["reduced", "full"] = option(
        "reduced",
        help="llama-cpp backend: `reduced` computes the output head over the tokens the engine can emit "
        "only (a GGUF cut to those rows is written once beside the model, under reduced/; prompts go in "
        "as embedding rows of the full file), `full` over the whole vocabulary.",
    )


class VllmOptions(PluginOptions):
    """Options of the vllm backend."""

    owner = "vllm"

    llm_gpu_memory_utilization: float = gpu_memory_utilization()


class SglangOptions(PluginOptions):
    """Options of the sglang backend."""

    owner = "sglang"

    llm_gpu_memory_utilization: float = gpu_memory_utilization()


class TensorRTOptions(PluginOptions):
    """Options of the tensorrt-llm backend."""

    owner = "tensorrt-llm"

    llm_tensorrt_path: Optional[Path] = option(
        None,
        help="TensorRT-LLM engine directory (tensorrt-llm backend); default {model_path}/tensorrt-engine.",
    )
    # The share of free GPU memory its KV cache takes (KvCacheConfig.free_gpu_memory_fraction).
    llm_gpu_memory_utilization: float = gpu_memory_utilization()

    def engine_dir(self, model_path: Optional[Path]) -> Optional[Path]:
        """``--llm_tensorrt_path``, else ``{model_path}/tensorrt-engine``."""
        if self.llm_tensorrt_path is not None:
            return Path(self.llm_tensorrt_path)
        return Path(model_path) / "tensorrt-engine" if model_path is not None else None
