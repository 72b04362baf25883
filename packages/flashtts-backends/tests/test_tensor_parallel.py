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
