"""Registers the six LLM backends. Importing this module imports no engine library."""

from flashtts_core.hookspecs import hookimpl

from .torch_backend import TorchBackend
from .llama_cpp_backend import LlamaCppBackend
from .mlx_backend import MlxBackend
from .unavailable import SglangBackend, TensorRTBackend
from .vllm_backend import VllmBackend


@hookimpl
def register_backends(register):
    for backend in (TorchBackend, VllmBackend, SglangBackend, LlamaCppBackend, MlxBackend, TensorRTBackend):
        register(backend)
