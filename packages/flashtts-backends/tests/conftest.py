"""Fixtures for the backend tests: one tiny f32 Qwen2 with a byte-level tokenizer, and one engine
per backend for the whole session (engine start is the expensive part, above all vLLM's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio
from flashtts_core.backend import BackendConfig, LLMBackend
from flashtts_core.errors import BackendUnavailable
from flashtts_core.plugins import get_plugin_manager

VOCAB = 512
EOS = "<|im_end|>"
# Concurrency the suite needs from every backend at once.
BATCH = 16


def write_tiny_qwen2(path: Path, *, hidden: int = 128, layers: int = 2) -> Path:
    """A tiny Qwen2 whose vocabulary is exactly the tokenizer's (256 bytes + specials + extras)."""
    from flashtts_core.tiny_llm import write_tiny_llm, write_tokenizer

    extras = [f"<|tok_{i}|>" for i in range(VOCAB - 256 - 2)]
    size = write_tokenizer(path, ["<|endoftext|>", EOS], eos_token=EOS, extra_tokens=extras)
    assert size == VOCAB
    from transformers import AutoTokenizer

    eos_id = AutoTokenizer.from_pretrained(str(path)).convert_tokens_to_ids(EOS)
    write_tiny_llm(path, vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, eos_token_id=eos_id)
    return path


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return write_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2") / "LLM")


def backend_config(model_path: Path, **changes) -> BackendConfig:
    """The suite's BackendConfig; a change that is no BackendConfig field is a model option (a
    backend's own, ``cache_implementation="static"``), read back by the backend from ``options``."""
    from dataclasses import fields

    from flashtts_core.options import EngineOptions

    values = dict(model_path=model_path, device="cpu", torch_dtype="float32", max_length=512, batch_size=BATCH, seed=0)
    options = {"llm_gpu_memory_utilization": 0.5}
    known = {f.name for f in fields(BackendConfig)}
    for name, value in changes.items():
        (values if name in known else options)[name] = value
    return BackendConfig(**values, options=EngineOptions(**options))


# Engines that need CUDA: their adapters run against the documented API's stand-ins in standins/.
STANDIN_MODULES = {"sglang": "sglang", "tensorrt-llm": "tensorrt_llm"}
STANDINS = Path(__file__).parent / "standins"


def use_standin(name: str) -> bool:
    """Put the stand-in of ``name``'s engine on sys.path when the real one is not installed."""
    import importlib.util
    import sys

    module = STANDIN_MODULES.get(name)
    if module is None or importlib.util.find_spec(module) is not None:
        return False
    sys.path.insert(0, str(STANDINS))
    return True


# Suite names that are a registered backend with non-default options.
VARIANTS = {"torch:static-cache": ("torch", {"cache_implementation": "static"})}


async def build_backend(name: str, model_path: Path) -> LLMBackend:
    """Build a registered backend, or skip when its library is not installed here (or this run's
    FLASHTTS_TEST_BACKENDS leaves it to another nox session)."""
    import os

    only = os.environ.get("FLASHTTS_TEST_BACKENDS", "").strip()
    name, options = VARIANTS.get(name, (name, {}))
    if only and name not in {n.strip() for n in only.split(",")}:
        pytest.skip(f"backend {name!r} runs in its own session (FLASHTTS_TEST_BACKENDS={only})")
    cls = get_plugin_manager().backends[name]
    try:
        cls.check_available()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    # CUDA-only engines (real or stand-in) are asked for their own device.
    device = "auto" if name in STANDIN_MODULES else "cpu"
    return await cls.create(backend_config(model_path, device=device, **options))


@pytest.fixture(scope="session")
def tiny_gguf(tiny_llm_dir, tmp_path_factory) -> Path:
    """The tiny model as an f32 GGUF, written by ``flashtts convert gguf``'s own code."""
    pytest.importorskip("llama_cpp", reason='pip install "flashtts-backends[llama-cpp]"')
    from flashtts_backends.gguf_convert import convert_to_gguf

    return convert_to_gguf(tiny_llm_dir, outtype="f32", outfile=tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def backends(tiny_llm_dir, request):
    """``await backends(name)``: that backend on the tiny model, built on first use and shared by
    the session (all on the session's event loop, which async engines are bound to)."""
    import sys

    built: dict[str, LLMBackend] = {}
    standin_path = False

    async def get(name: str) -> LLMBackend:
        nonlocal standin_path
        if name not in built:
            standin_path |= use_standin(name)
            # llama-cpp reads the GGUF conversion of the same weights.
            path = request.getfixturevalue("tiny_gguf") if name == "llama-cpp" else tiny_llm_dir
            built[name] = await build_backend(name, path)
        return built[name]

    yield get
    for backend in built.values():
        await backend.close()
    if standin_path:
        sys.path.remove(str(STANDINS))


@pytest.fixture(scope="session")
def make_config():
    """``make_config(model_path, **changes)``: the suite's BackendConfig (tests import no conftest)."""
    return backend_config
