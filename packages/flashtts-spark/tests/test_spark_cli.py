"""The ``flashtts`` command with a Spark model: tiny-model and infer, as subprocesses."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import soundfile as sf

HOP = 320


def _flashtts(*args: str, cwd=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "flashtts_server.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _infer(model, out, tmp_path, *flags: str) -> None:
    """``flashtts infer`` of "Hello there." with ``model`` on the torch backend into ``out``."""
    _flashtts(
        "infer",
        "--model_path",
        str(model),
        "--backend",
        "torch",
        "-i",
        "Hello there.",
        "-o",
        str(out),
        *flags,
        "--role_dir",
        str(tmp_path / "roles"),
    )


def _check_wav(path, tokens: int) -> None:
    audio, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    assert audio.shape == (tokens * HOP,)
    assert np.abs(audio).max() > 0


def test_tiny_model_command_then_infer_builtin_voice(tmp_path):
    target = tmp_path / "spark"
    proc = _flashtts("tiny-model", "spark", str(target))
    # Not a terminal: one log line per step (flashtts_core.progress).
    assert f"tiny Spark-TTS in {target} [1/2] config.yaml, BiCodec/ and wav2vec2-large-xlsr-53/" in proc.stderr
    assert f"tiny Spark-TTS in {target} [2/2] LLM/" in proc.stderr
    for path in (
        "config.yaml",
        "BiCodec/config.yaml",
        "BiCodec/model.safetensors",
        "LLM/config.json",
        "LLM/model.safetensors",
        "LLM/tokenizer.json",
        "wav2vec2-large-xlsr-53/config.json",
    ):
        assert (target / path).is_file(), path
    assert "audio_tokenizer:" in (target / "BiCodec" / "config.yaml").read_text()
    out = tmp_path / "out.wav"
    _infer(target, out, tmp_path, "--name", "female", "--pitch", "high", "--speed", "low", "--max_tokens", "40")
    _check_wav(out, 40)


def test_infer_clone(tiny_spark, tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 24000
    ref = tmp_path / "ref.wav"
    sf.write(ref, (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32), 24000)
    out = tmp_path / "clone.wav"
    _infer(
        tiny_spark,
        out,
        tmp_path,
        "--reference_audio",
        str(ref),
        "--reference_text",
        "A reference.",
        "--max_tokens",
        "30",
    )
    _check_wav(out, 30)
