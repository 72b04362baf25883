"""Registers the six LLM backends and ``flashtts convert gguf``. Importing this module imports no engine library."""

from flashtts_core.hookspecs import hookimpl

from .llama_cpp_backend import LlamaCppBackend
from .mlx_backend import MlxBackend
from .options import LlamaCppOptions, SglangOptions, TensorRTOptions, TorchOptions, VllmOptions
from .sglang_backend import SglangBackend
from .tensorrt_backend import TensorRTBackend
from .torch_backend import TorchBackend
from .vllm_backend import VllmBackend


@hookimpl
def register_backends(register):
    for backend in (TorchBackend, VllmBackend, SglangBackend, LlamaCppBackend, MlxBackend, TensorRTBackend):
        register(backend)


@hookimpl
def register_options(register):
    for options in (TorchOptions, VllmOptions, SglangOptions, TensorRTOptions, LlamaCppOptions):
        register(options)


@hookimpl
def register_commands(register):
    from .commands import configure_convert_gguf

    register(
        "convert gguf",
        configure_convert_gguf,
        help="write a GGUF of the model's LLM folder for --backend llama-cpp",
    )
