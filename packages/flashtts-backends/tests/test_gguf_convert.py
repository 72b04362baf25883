"""``flashtts convert gguf``: llama.cpp's converter on our LLM folders, loaded back by llama-cpp."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from flashtts_core.sampling import SamplingParams

pytest.importorskip("llama_cpp", reason='pip install "flashtts-backends[llama-cpp]"')


def test_pre_tokenizer_is_named_from_tokenizer_json(tiny_llm_dir, tmp_path):
    from flashtts_backends.gguf_convert import _QWEN2_REGEX, pre_tokenizer_name

    assert pre_tokenizer_name(tiny_llm_dir) == "gpt-2"  # ByteLevel with its built-in regex
    qwen = {
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": _QWEN2_REGEX}, "behavior": "Isolated"},
                {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False},
            ],
        }
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(qwen))
    assert pre_tokenizer_name(tmp_path) == "qwen2"


def convert_cli(model_dir, outtype: str):
    proc = subprocess.run(
        [sys.executable, "-m", "flashtts_server.cli", "convert", "gguf", str(model_dir), "--outtype", outtype],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    gguf = model_dir / "LLM" / f"model-{outtype}.gguf"
    assert gguf.is_file() and f"wrote {gguf}" in proc.stdout
    # Not a terminal: one log line per step (flashtts_core.progress).
    steps = 3 if outtype.startswith("q4") else 2
    assert f"[1/{steps}] llama.cpp's converter" in proc.stderr
    assert f"[{steps}/{steps}] {'quantized' if steps == 3 else 'converted'} to {gguf} ({outtype})" in proc.stderr
    return gguf


@pytest.fixture
def model_dir(tiny_llm_dir, tmp_path):
    """A TTS-style model folder whose LLM folder is the tiny model."""
    (tmp_path / "model" / "LLM").mkdir(parents=True)
    for file in tiny_llm_dir.iterdir():
        (tmp_path / "model" / "LLM" / file.name).write_bytes(file.read_bytes())
    return tmp_path / "model"


@pytest.mark.asyncio
async def test_cli_writes_an_f16_gguf_the_llama_cpp_backend_runs(model_dir, make_config):
    from flashtts_backends.llama_cpp_backend import LlamaCppBackend

    convert_cli(model_dir, "f16")
    # The folder is enough: the backend finds the one GGUF in it.
    backend = await LlamaCppBackend.create(make_config(model_dir / "LLM"))
    try:
        out = await backend.generate([72, 101, 108], SamplingParams(temperature=0.8, max_tokens=12, seed=1))
        assert len(out.token_ids) == 12
    finally:
        await backend.close()


def test_quantized_types_are_written_smaller(model_dir):
    # Written only: llama-cpp-python 0.3.36's CPU build here crashes evaluating any quantized type
    # (q8_0, q4_0, q4_k_m; tiny and 896-wide models alike), so running them is not tested here.
    f16 = convert_cli(model_dir, "f16")
    q4 = convert_cli(model_dir, "q4_0")
    assert q4.stat().st_size < 0.5 * f16.stat().st_size


def test_a_folder_without_a_model_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flashtts_server.cli", "convert", "gguf", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "holds no Hugging Face LLM" in proc.stderr
