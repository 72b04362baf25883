"""--llm_tensor_parallel_size reaches each engine under the name its API documents.

sglang and tensorrt-llm run here against the stand-ins of their APIs (no GPU): the stand-ins take the
documented keyword (``tp_size`` of ServerArgs, ``tensor_parallel_size`` of ``LLM``) and refuse any
other, so a misspelt argument fails. Sharding over real GPUs is not exercised on these machines.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from flashtts_core.plugins import get_plugin_manager

ENGINES = {
    "sglang": ("sglang", lambda backend: backend.engine.server_args.tp_size),
    "tensorrt-llm": ("tensorrt_llm", lambda backend: backend.llm.args.tensor_parallel_size),
}


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("name", sorted(ENGINES))
async def test_tensor_parallel_size_reaches_the_engine(name, backends, make_config, tiny_llm_dir):
    module, tp_of = ENGINES[name]
    shared = await backends(name)  # puts the stand-in on sys.path (or skips when the backend is unavailable)
    if "standins" not in Path(importlib.import_module(module).__file__).parts:
        pytest.skip(f"the real {module} is installed: two GPUs would be needed for tensor_parallel_size 2")
    assert tp_of(shared) == 1  # the default: one GPU per engine
    cls = get_plugin_manager().backends[name]
    backend = await cls.create(make_config(tiny_llm_dir, device="auto", tensor_parallel_size=2))
    try:
        assert tp_of(backend) == 2
    finally:
        await backend.close()


def test_the_option_fills_the_backend_config(tmp_path):
    from flashtts_core.backend import BackendConfig
    from flashtts_core.options import EngineOptions

    assert BackendConfig.from_options(EngineOptions(), tmp_path).tensor_parallel_size == 1
    options = EngineOptions(llm_tensor_parallel_size=4, model_path=tmp_path)
    assert BackendConfig.from_options(options, tmp_path / "LLM").tensor_parallel_size == 4
    with pytest.raises(ValueError):
        EngineOptions(llm_tensor_parallel_size=0)


def test_backends_that_run_on_one_device_refuse_a_tensor_parallel_size():
    from flashtts_core.errors import InvalidRequest

    backends = get_plugin_manager().backends
    for name in ("vllm", "sglang", "tensorrt-llm"):
        backends[name].check_tensor_parallel(8)
    for name in ("torch", "llama-cpp", "mlx-lm"):
        backends[name].check_tensor_parallel(1)
        with pytest.raises(InvalidRequest, match="runs the LLM on one device") as caught:
            backends[name].check_tensor_parallel(2)
        assert caught.value.param == "llm_tensor_parallel_size"


def test_serve_refuses_it_before_loading_anything(tiny_spark, tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "flashtts_server.cli", "serve", "--model_path", str(tiny_spark)]
    done = subprocess.run(
        [*cmd, "--backend", "torch", "--llm_tensor_parallel_size", "2", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "--llm_tensor_parallel_size 2 needs vllm" in done.stderr, done.stderr
