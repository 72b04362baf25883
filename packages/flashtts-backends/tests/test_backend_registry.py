"""Every backend is registered, imports nothing heavy, and names the extra that installs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from flashtts_core.errors import BackendUnavailable
from flashtts_core.plugins import get_plugin_manager

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"
EXPECTED = {"torch", "vllm", "sglang", "llama-cpp", "mlx-lm", "tensorrt-llm"}


def test_all_six_backends_are_registered():
    assert set(get_plugin_manager().backends) >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_missing_library_names_its_extra_in_one_line(name, monkeypatch):
    cls = get_plugin_manager().backends[name]
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert cls.extra in extras, f"{name}: extra {cls.extra!r} is not declared in pyproject.toml"
    monkeypatch.setattr(cls, "requires", ("flashtts_no_such_module",))
    with pytest.raises(BackendUnavailable) as err:
        cls.check_available()
    message = str(err.value)
    assert "\n" not in message
    assert f'pip install "flashtts-backends[{cls.extra}]"' in message


def test_importing_the_plugin_imports_no_engine_library():
    code = (
        "import sys, flashtts_backends.plugin\n"
        "heavy = {'torch', 'vllm', 'llama_cpp', 'mlx', 'mlx_lm', 'sglang', 'tensorrt_llm', 'transformers'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
