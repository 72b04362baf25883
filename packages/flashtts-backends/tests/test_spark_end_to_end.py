"""Spark-TTS end to end on every installed backend: the real CLI, the tiny Spark model, a WAV out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave

import pytest
from flashtts_core.errors import BackendUnavailable
from flashtts_core.plugins import get_plugin_manager


@pytest.mark.parametrize("backend", ["torch", "vllm", "llama-cpp", "mlx-lm"])
def test_spark_synthesizes_on_each_backend(backend, tiny_spark, tmp_path):
    try:
        get_plugin_manager().backends[backend].check_available()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    model = tmp_path / "spark"
    shutil.copytree(tiny_spark, model)
    cli = [sys.executable, "-m", "flashtts_server.cli"]
    if backend == "llama-cpp":
        subprocess.run([*cli, "convert", "gguf", str(model), "--outtype", "f32"], check=True, capture_output=True)
    out = tmp_path / "out.wav"
    proc = subprocess.run(
        [
            *cli,
            "infer",
            "--model_path",
            str(model),
            "--backend",
            backend,
            "--max_length",
            "2048",
            "-i",
            "Hello there. This runs on every backend.",
            "-o",
            str(out),
            "--max_tokens",
            "60",
            "--role_dir",
            str(tmp_path / "roles"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"VLLM_CPU_KVCACHE_SPACE": "1", **os.environ},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == 16000 and wav.getnframes() > 0
