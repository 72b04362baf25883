"""Stand-in of tensorrt_llm.llmapi: the KvCacheConfig the adapter passes."""

from dataclasses import dataclass
from typing import Optional


@dataclass(kw_only=True)
class KvCacheConfig:
    free_gpu_memory_fraction: Optional[float] = None
    max_tokens: Optional[int] = None
    enable_block_reuse: bool = True
