"""The model-related options every engine and backend reads (the server adds host, port, keys …)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

Dtype = Literal["float16", "bfloat16", "float32", "auto"]
AttnImpl = Literal["sdpa", "flash_attention_2", "eager"]


class EngineOptions(BaseModel):
    """Options of ``reference/server-api.md`` §2 that concern loading and running a model."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_path: Optional[Path] = Field(None, description="Path to the TTS model directory.")
    backend: Optional[str] = Field(
        None, description="LLM backend: llama-cpp, vllm, sglang, torch, mlx-lm, tensorrt-llm."
    )
    snac_path: Optional[Path] = Field(None, description="Path to the Orpheus SNAC codec folder (default: MODEL/snac).")
    llm_tensorrt_path: Optional[Path] = Field(
        None, description="TensorRT-LLM engine directory (tensorrt-llm backend); default {model_path}/tensorrt-engine."
    )
    lang: Optional[str] = Field(
        None, description="Orpheus language (english, french, german, korean, hindi, mandarin, spanish, italian)."
    )
    llm_device: str = Field("auto", description="Device for the LLM (cpu, cuda, cuda:1, mps, auto).")
    tokenizer_device: str = Field("auto", description="Device for the audio tokenizer.")
    detokenizer_device: str = Field("auto", description="Device for the audio detokenizer.")
    wav2vec_attn_implementation: AttnImpl = Field("eager", description="wav2vec2 attention in Spark-TTS.")
    detokenizer_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="Precision of Spark-TTS's BiCodec decoder; bfloat16 is faster on CPUs with AMX and "
        "differs from float32 by up to ~3e-2 of the peak.",
    )
    llm_attn_implementation: AttnImpl = Field("eager", description="LLM attention (torch backend).")
    max_length: int = Field(32768, gt=0, description="Maximum LLM context length.")
    llm_gpu_memory_utilization: float = Field(0.6, gt=0, le=1, description="GPU memory share for vllm/sglang.")
    llm_tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one LLM is split across (tensor parallel; vllm, sglang, tensorrt-llm)."
    )
    torch_dtype: Dtype = Field("auto", description="Model precision.")
    llm_quantization: Optional[Literal["int8"]] = Field(
        None,
        description="torch backend: int8 weight-only linear layers in the LLM body (one scale per output "
        "channel, bfloat16 activations); half the bytes a CPU decode step reads.",
    )
    cache_implementation: Optional[str] = Field(
        None, description="KV-cache strategy for the torch backend: static, offloaded_static, sliding_window, …"
    )
    seed: int = Field(0, description="Random seed.")
    speaking_rate_bound: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Scale of each text segment's speaking-rate bound (about 3x slower than ordinary speech; "
        "a request's max_tokens can only lower it): 2 doubles it, 0 turns it off.",
    )
    batch_size: int = Field(1, gt=0, description="Maximum batch size of audio (de)tokenization.")
    llm_batch_size: int = Field(256, gt=0, description="Maximum number of concurrent LLM sequences.")
    wait_timeout: float = Field(0.01, ge=0, description="Seconds the dynamic batcher waits to fill a batch.")
    fix_voice: bool = Field(False, description="Keep Spark-TTS's built-in female/male timbres fixed.")
    # A str too: pydantic's Path would turn "s3://bucket/roles" into "s3:/bucket/roles".
    role_dir: Optional[str | Path] = Field(
        None,
        description="Saved roles: a directory, or an fsspec URL such as s3://bucket/prefix shared by replicas "
        "(default data/roles, data/mega-roles for Mega).",
    )


def resolve_device(device: str) -> str:
    """``auto`` becomes cuda, mps or cpu, whichever this machine has."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for a ``--torch_dtype`` value on a device (``auto``: float32 on CPU, else bf16/fp16)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


def llm_dtype_name(options: EngineOptions, device: str) -> str:
    """What the LLM's weights load as, for progress lines: a dtype, or where the backend takes it from."""
    if options.backend == "llama-cpp":
        return "weights as in the GGUF file"
    return str(resolve_dtype(options.torch_dtype, device)).removeprefix("torch.")
