"""The plugin system and the CLI, through the installed ``flashtts`` command and a third-party
example plugin (tests/plugins/flashtts-example) installed into the environment for this session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from conftest import start_server

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "plugins" / "flashtts-example"
SIX_BACKENDS = {"torch", "vllm", "sglang", "llama-cpp", "mlx-lm", "tensorrt-llm"}

# server-api.md §2, every flag.
CONTRACT_FLAGS = [
    "model_path", "backend", "snac_path", "llm_tensorrt_path", "role_dir", "api_key", "llm_device",
    "tokenizer_device", "detokenizer_device", "wav2vec_attn_implementation", "llm_attn_implementation",
    "max_length", "llm_gpu_memory_utilization", "torch_dtype", "cache_implementation", "seed", "batch_size",
    "llm_batch_size", "wait_timeout", "host", "port", "fix_voice",
]


def flashtts(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flashtts_server.cli", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout,
    )


@pytest.fixture(scope="module")
def example_plugin():
    """pip-install the example plugin (no change to the repo's packages) and remove it afterwards."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(EXAMPLE)], check=True)
    yield
    subprocess.run([*pip, "uninstall", "-y", "flashtts-example"], check=True)


def test_plugins_json_lists_backends_formats_and_the_third_party_plugin(example_plugin):
    out = flashtts("plugins", "--json")
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    for p in plugins.values():
        assert {"name", "distribution", "version", "engines", "backends", "codecs", "formats"} <= set(p)
    backends = {b for p in plugins.values() for b in p["backends"]}
    assert backends >= SIX_BACKENDS
    assert {f for p in plugins.values() for f in p["formats"]} >= {"mp3", "opus", "aac", "flac", "wav", "pcm"}
    example = plugins["example"]
    assert example["distribution"] == "flashtts-example" and example["version"] == "0.0.1"
    assert example["engines"] == ["tone"] and example["backends"] == ["markov"]
    text = flashtts("plugins")
    assert text.returncode == 0 and "example (flashtts-example 0.0.1)" in text.stdout


def test_plugin_discovery_imports_nothing_heavy():
    code = (
        "import sys; from flashtts_core.plugins import get_plugin_manager; pm = get_plugin_manager();"
        "pm.backend_status();"
        "heavy = [m for m in ('torch', 'transformers', 'vllm', 'snac', 'llama_cpp', 'mlx') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"plugin discovery imported {out.stdout.strip()}"


def test_a_broken_plugin_is_reported_and_does_not_stop_the_others(tmp_path):
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[flashtts]\nbroken = broken_plugin_module\n")
    (tmp_path / "broken_plugin_module.py").write_text("raise RuntimeError('boom at import')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = flashtts("plugins", "--json", env=env)
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert "RuntimeError: boom at import" in plugins["broken"]["error"]
    assert {b for p in plugins.values() for b in p["backends"]} >= SIX_BACKENDS


def test_serve_help_lists_every_contract_flag():
    out = flashtts("serve", "--help")
    assert out.returncode == 0
    for flag in CONTRACT_FLAGS:
        assert f"--{flag}" in out.stdout, flag


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["serve", "--port", "abc", "--model_path", ".", "--backend", "torch"], "--port"),
        (["serve", "--torch_dtype", "float64"], "invalid choice"),
        (["serve", "--backend", "torch"], "--model_path is required"),
        (["serve", "--model_path", "/nonexistent/model", "--backend", "torch"], "not a directory"),
        (["serve", "--model_path", ".", "--backend", "nope"], "no installed engine"),
        (["tiny-model", "nope", "x"], "unknown engine"),
        (["infer", "-i", "hi", "-o", "x.wav", "--model_path", "/nonexistent", "--backend", "torch"], "not a directory"),
    ],
)
def test_wrong_flags_get_one_clear_line(args, fragment, tmp_path):
    out = flashtts(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_backend_is_named(example_plugin, tmp_path):
    model = tmp_path / "tone"
    assert flashtts("tiny-model", "tone", str(model)).returncode == 0
    out = flashtts("serve", "--model_path", str(model), "--backend", "nope")
    assert out.returncode == 2 and "unknown backend 'nope'" in out.stderr and "markov" in out.stderr


def test_settings_come_from_environment_and_flags_win(monkeypatch):
    from flashtts_server.settings import ServerSettings

    monkeypatch.setenv("FLASHTTS_PORT", "9123")
    monkeypatch.setenv("FLASHTTS_FIX_VOICE", "true")
    monkeypatch.setenv("FLASHTTS_LLM_GPU_MEMORY_UTILIZATION", "0.5")
    s = ServerSettings()
    assert (s.port, s.fix_voice, s.llm_gpu_memory_utilization) == (9123, True, 0.5)
    assert ServerSettings(port=1234).port == 1234
    defaults = ServerSettings.model_fields
    assert defaults["max_length"].default == 32768 and defaults["llm_batch_size"].default == 256
    assert defaults["wait_timeout"].default == 0.01 and defaults["host"].default == "0.0.0.0"


def test_third_party_engine_and_backend_synthesize_through_infer(example_plugin, tmp_path):
    model = tmp_path / "tone-model"
    out = flashtts("tiny-model", "tone", str(model))
    assert out.returncode == 0 and "noise" in out.stdout
    target = tmp_path / "out.mp3"
    out = flashtts("infer", "--model_path", str(model), "--backend", "markov", "--name", "high", "--pitch", "high",
                   "--max_tokens", "25", "-i", "Hello from a plugin.", "-o", str(target))
    assert out.returncode == 0, out.stderr
    with av.open(str(target)) as c:
        s = c.streams.audio[0]
        n = sum(f.samples for f in c.decode(s))
        assert s.rate == 16000
    assert abs(n - 25 * 320) < 2000
    bad = flashtts("infer", "--model_path", str(model), "--backend", "markov", "--name", "nobody", "-i", "x", "-o", str(target))
    assert bad.returncode == 2 and "unknown voice or role 'nobody'" in bad.stderr


def test_server_answers_health_and_docs_with_a_third_party_engine(example_plugin, tmp_path):
    model = tmp_path / "tone-model"
    flashtts("tiny-model", "tone", str(model))
    server = start_server(["--model_path", str(model), "--backend", "markov", "--role_dir", str(tmp_path / "roles")], tmp_path)
    try:
        with server.client() as client:
            assert client.get("/health").json()["engine"] == "tone"
            assert client.get("/docs").status_code == 200
            assert client.get("/openapi.json").json()["info"]["title"] == "FlashTTS"
    finally:
        server.stop()
