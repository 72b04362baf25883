"""Registers the six LLM backends. Importing this module imports no engine library."""

from flashtts_core.hookspecs import hookimpl

from .torch_backend import TorchBackend
from .unavailable import LlamaCppBackend, MlxBackend, SglangBackend, TensorRTBackend
from .vllm_backend import VllmBackend


@hookimpl
def register_backends(register):
    for backend in (TorchBackend, VllmBackend, SglangBackend, LlamaCppBackend, MlxBackend, TensorRTBackend):
        register(backend)
