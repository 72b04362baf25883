"""Backends registered by name whose adapters are not built yet; choosing one says so clearly."""

from __future__ import annotations

from flashtts_core.backend import BackendConfig, LLMBackend
from flashtts_core.errors import BackendUnavailable


class _NotYetAvailable(LLMBackend):
    @classmethod
    def check_available(cls) -> None:
        raise BackendUnavailable(
            f"backend {cls.name!r} is registered but not available yet in this release; use --backend torch"
        )

    @classmethod
    async def create(cls, config: BackendConfig) -> LLMBackend:
        cls.check_available()
        raise AssertionError("unreachable")

    def stream(self, prompt_ids, params):  # pragma: no cover - never constructed
        raise NotImplementedError


class SglangBackend(_NotYetAvailable):
    name = "sglang"
    extra = "sglang"
    description = "SGLang engine"


class TensorRTBackend(_NotYetAvailable):
    name = "tensorrt-llm"
    extra = "tensorrt"
    description = "TensorRT-LLM LLM API"
