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
    "model_path",
    "backend",
    "snac_path",
    "llm_tensorrt_path",
    "role_dir",
    "api_key",
    "llm_device",
    "tokenizer_device",
    "detokenizer_device",
    "wav2vec_attn_implementation",
    "llm_attn_implementation",
    "max_length",
    "llm_gpu_memory_utilization",
    "torch_dtype",
    "cache_implementation",
    "seed",
    "batch_size",
    "llm_batch_size",
    "wait_timeout",
    "host",
    "port",
    "fix_voice",
]


def flashtts(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flashtts_server.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
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


def test_the_torch_backends_flags_are_refused_with_another_backend(example_plugin, tmp_path):
    """--llm_quantization is the torch backend's (flashtts-backends declares it, not core): with
    another backend, serve and infer stop before loading, naming it, rather than run unquantized."""
    model = tmp_path / "tone"
    assert flashtts("tiny-model", "tone", str(model)).returncode == 0
    common = ["--model_path", str(model), "--backend", "markov", "--llm_quantization", "int8"]
    for args in (["serve", *common], ["infer", *common, "-i", "Hi.", "-o", str(tmp_path / "x.wav")]):
        out = flashtts(*args)
        assert out.returncode == 2, out.stderr
        assert (
            "backend 'markov' does not quantize the LLM itself; --llm_quantization int8 is for the torch" in out.stderr
        )
        assert "Traceback" not in out.stderr
    # The torch backend's other flags are only read by it: another backend goes on without them.
    out = flashtts(
        "infer", "--model_path", str(model), "--backend", "markov", "--llm_attn_implementation", "sdpa",
        "--cache_implementation", "static", "--max_tokens", "5", "-i", "Hi.", "-o", str(tmp_path / "y.wav"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_backend_flags_name_the_installed_backends(example_plugin, tmp_path):
    """Core names no backend: --backend's help, its "required" error and the tensor-parallel refusal
    list what is installed (the example plugin's markov too)."""
    text = " ".join(flashtts("serve", "--help").stdout.split())
    backend_help = text.split("--backend BACKEND LLM backend: ", 1)[1].split(" (default", 1)[0]
    assert {"torch", "vllm", "markov"} <= set(backend_help.rstrip(".").split(", "))
    assert "(tensor parallel; vllm, sglang, tensorrt-llm)" in text
    model = tmp_path / "tone"
    assert flashtts("tiny-model", "tone", str(model)).returncode == 0
    out = flashtts("serve", "--model_path", str(model))
    assert out.returncode == 2 and "--backend is required: " in out.stderr and "markov" in out.stderr
    out = flashtts("serve", "--model_path", str(model), "--backend", "markov", "--llm_tensor_parallel_size", "2")
    assert out.returncode == 2, out.stderr
    assert (
        "backend 'markov' runs the LLM on one device; --llm_tensor_parallel_size 2 needs vllm, sglang or " in out.stderr
    )


def test_settings_come_from_environment_and_flags_win(monkeypatch):
    from flashtts_server.settings import settings_model

    ServerSettings = settings_model()  # with the plugins' server flags: fix_voice is Spark's
    monkeypatch.setenv("FLASHTTS_PORT", "9123")
    monkeypatch.setenv("FLASHTTS_FIX_VOICE", "true")
    monkeypatch.setenv("FLASHTTS_LLM_GPU_MEMORY_UTILIZATION", "0.5")
    monkeypatch.setenv("FLASHTTS_LLM_QUANTIZATION", "int8")  # the torch backend's flag
    monkeypatch.setenv("FLASHTTS_CACHE_IMPLEMENTATION", "static")
    s = ServerSettings()
    assert (s.port, s.fix_voice, s.llm_gpu_memory_utilization) == (9123, True, 0.5)
    assert (s.llm_quantization, s.cache_implementation, s.llm_attn_implementation) == ("int8", "static", "eager")
    assert ServerSettings(port=1234).port == 1234
    defaults = ServerSettings.model_fields
    assert defaults["max_length"].default == 32768 and defaults["llm_batch_size"].default == 256
    assert defaults["wait_timeout"].default == 0.01 and defaults["host"].default == "0.0.0.0"


def test_third_party_engine_and_backend_synthesize_through_infer(example_plugin, tmp_path):
    model = tmp_path / "tone-model"
    out = flashtts("tiny-model", "tone", str(model))
    assert out.returncode == 0 and "noise" in out.stdout
    target = tmp_path / "out.mp3"
    out = flashtts(
        "infer",
        "--model_path",
        str(model),
        "--backend",
        "markov",
        "--name",
        "high",
        "--pitch",
        "high",
        "--max_tokens",
        "25",
        "-i",
        "Hello from a plugin.",
        "-o",
        str(target),
    )
    assert out.returncode == 0, out.stderr
    with av.open(str(target)) as c:
        s = c.streams.audio[0]
        n = sum(f.samples for f in c.decode(s))
        assert s.rate == 16000
    assert abs(n - 25 * 320) < 2000
    bad = flashtts(
        "infer", "--model_path", str(model), "--backend", "markov", "--name", "nobody", "-i", "x", "-o", str(target)
    )
    assert bad.returncode == 2 and "unknown voice or role 'nobody'" in bad.stderr


def test_server_answers_health_and_docs_with_a_third_party_engine(example_plugin, tmp_path):
    model = tmp_path / "tone-model"
    flashtts("tiny-model", "tone", str(model))
    server = start_server(
        ["--model_path", str(model), "--backend", "markov", "--role_dir", str(tmp_path / "roles")], tmp_path
    )
    try:
        with server.client() as client:
            assert client.get("/health").json()["engine"] == "tone"
            assert client.get("/docs").status_code == 200
            assert client.get("/openapi.json").json()["info"]["title"] == "FlashTTS"
    finally:
        server.stop()


def _tone(pcm: bytes):
    import numpy as np

    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32767
    crossings = int(np.count_nonzero(np.diff(np.signbit(audio))))
    return float(np.abs(audio).max()), crossings


def test_the_example_plugins_own_flag_and_request_field_reach_its_engine(example_plugin, tmp_path):
    """tests/plugins/flashtts-example declares --tone_gain (a server flag) and tone_octave (a request
    field) in its own package; with no change to core or server both reach its engine."""
    import io

    import numpy as np
    import soundfile as sf

    help_text = flashtts("serve", "--help").stdout
    assert "--tone_gain" in help_text and "--tone_octave" not in help_text  # a request field is no flag
    model = tmp_path / "tone-model"
    flashtts("tiny-model", "tone", str(model))
    args = ["--model_path", str(model), "--backend", "markov", "--role_dir", str(tmp_path / "roles")]
    server = start_server([*args, "--tone_gain", "0.8"], tmp_path)
    body = {"name": "low", "text": "Hi there.", "response_format": "pcm", "max_tokens": 20, "seed": 3, "stream": False}
    reference = io.BytesIO()
    sf.write(reference, 0.5 * np.sin(2 * np.pi * 150 * np.arange(16000) / 16000), 16000, format="WAV")
    try:
        with server.client() as client:
            info = client.get("/server_info").json()
            plain = client.post("/speak", json=body)
            octave = client.post("/speak", json={**body, "tone_octave": 1})
            speech = client.post(
                "/v1/audio/speech",
                json={"input": "Hi there.", "voice": "low", "response_format": "pcm", "stream": False,
                      "sample_rate": 16000, "max_tokens": 20, "seed": 3, "tone_octave": 1},
            )  # fmt: skip
            form = {"text": "Hi there.", "response_format": "pcm", "max_tokens": "20", "seed": "3"}
            files = {"reference_audio_file": ("ref.wav", reference.getvalue(), "audio/wav")}
            cloned = client.post("/clone_voice", data=form, files=files)
            cloned_octave = client.post("/clone_voice", data={**form, "tone_octave": "-1"}, files=files)
            too_high = client.post("/speak", json={**body, "tone_octave": 3})
            foreign = client.post("/speak", json={**body, "time_step": 8})  # MegaTTS3's, not the tone engine's
            spec = client.get("/openapi.json").json()
    finally:
        server.stop()
    assert [(o["name"], o["owner"], o["type"], o["minimum"], o["maximum"]) for o in info["options"]] == [
        ("tone_octave", "tone", "integer", -2, 2)
    ]
    schema = spec["components"]["schemas"]
    clone = spec["paths"]["/clone_voice"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    assert schema["SpeakRequest"]["properties"]["tone_octave"]["maximum"] == 2
    assert "tone_octave" in schema["SpeechRequest"]["properties"]
    assert "tone_octave" in schema[clone.rsplit("/", 1)[1]]["properties"]
    for r in (plain, octave, speech, cloned, cloned_octave):
        assert r.status_code == 200, r.text
    peak, crossings = _tone(plain.content)
    assert abs(peak - 0.8) < 0.02  # --tone_gain 0.8 (the default is 0.3)
    octave_peak, octave_crossings = _tone(octave.content)
    assert abs(octave_peak - 0.8) < 0.02 and 1.9 < octave_crossings / crossings < 2.1  # one octave up
    assert speech.content == octave.content  # the OpenAI body carries it too
    assert 0.45 < _tone(cloned_octave.content)[1] / _tone(cloned.content)[1] < 0.55  # the clone form: one down
    assert too_high.status_code == 400 and too_high.json()["error"]["param"] == "tone_octave"
    assert foreign.status_code == 400 and foreign.json()["error"]["param"] == "time_step"
    assert "an option of 'mega'" in foreign.json()["error"]["message"]


def test_infer_takes_the_example_plugins_flag_and_field(example_plugin, tmp_path):
    """`flashtts infer` derives its flags from the same declarations: --tone_gain, --tone_octave."""
    import soundfile as sf

    model = tmp_path / "tone-model"
    flashtts("tiny-model", "tone", str(model))
    common = [
        "--model_path",
        str(model),
        "--backend",
        "markov",
        "--name",
        "low",
        "--max_tokens",
        "20",
        "-i",
        "Hi there.",
    ]
    runs = {}
    for label, extra in (("plain", []), ("octave", ["--tone_octave", "1"])):
        target = tmp_path / f"{label}.wav"
        out = flashtts("infer", *common, "--seed", "3", "--tone_gain", "0.8", *extra, "-o", str(target))
        assert out.returncode == 0, out.stderr
        audio, _ = sf.read(target, dtype="int16")
        runs[label] = _tone(audio.tobytes())
    assert abs(runs["plain"][0] - 0.8) < 0.02
    assert 1.9 < runs["octave"][1] / runs["plain"][1] < 2.1
    bad = flashtts("infer", *common, "--tone_octave", "5", "-o", str(tmp_path / "x.wav"))
    assert bad.returncode == 2 and "--tone_octave" in bad.stderr and "Traceback" not in bad.stderr


# -- commands from plugins (register_commands) ------------------------------------------------------
SERVER_SRC = ROOT / "packages" / "flashtts-server" / "src"


def test_the_server_package_imports_no_backends_module():
    import ast

    offenders = []
    for path in SERVER_SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value]  # importlib.import_module("flashtts_backends...")
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.startswith("flashtts_backends")]
    assert not offenders, offenders
    # Without flashtts-backends the CLI still works; `convert` is simply not there.
    code = (
        "import sys; sys.modules['flashtts_backends'] = None; from flashtts_server.cli import main;main(sys.argv[1:])"
    )
    out = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "serve" in out.stdout and "convert" not in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-c", code, "convert", "gguf", "x"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice: 'convert'" in out.stderr


def test_plugins_list_their_commands_and_a_third_party_command_runs(example_plugin):
    out = flashtts("plugins", "--json")
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["backends"]["commands"] == ["convert gguf"]
    assert plugins["example"]["commands"] == ["tone voices"]
    text = flashtts("plugins").stdout
    assert "  commands: convert gguf" in text and "  commands: tone voices" in text
    assert "tone" in flashtts("--help").stdout
    out = flashtts("tone", "voices")
    assert out.returncode == 0 and out.stdout.split() == ["low", "high"]
    out = flashtts("tone", "voices", "--only", "nope")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "flashtts tone voices: error: no tone voice 'nope'; voices: low, high"


def test_a_command_clashing_with_a_builtin_or_another_plugin_is_refused(tmp_path):
    dist = tmp_path / "clashy-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clashy\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[flashtts]\nclashy = clashy_module\n")
    (tmp_path / "clashy_module.py").write_text(
        "from flashtts_core import hookimpl\n"
        "def configure(parser):\n"
        "    parser.add_argument('word')\n"
        "    return lambda args: print('clashy says', args.word)\n"
        "@hookimpl\n"
        "def register_commands(register):\n"
        "    for name in ('serve', 'tiny-model extra', 'convert gguf', 'convert', 'convert  gguf  more'):\n"
        "        register(name, configure)\n"
        "    register('clashy  say', configure, help='says a word')\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = flashtts("plugins", "--json", env=env)
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["clashy"]["commands"] == ["clashy say"] and plugins["backends"]["commands"] == ["convert gguf"]
    for refused in (
        "'serve' is a built-in",
        "'tiny-model' is a built-in",
        "registered it first",
        "overlaps 'convert gguf'",
    ):
        assert refused in out.stderr
    out = flashtts("clashy", "say", "hello", env=env)
    assert out.returncode == 0 and out.stdout.strip() == "clashy says hello"
    out = flashtts("convert", "gguf", str(tmp_path), env=env)
    assert out.returncode == 2 and "holds no Hugging Face LLM" in out.stderr


def test_progress_on_a_terminal_is_a_tqdm_bar_and_otherwise_log_lines(tmp_path):
    """The helper behind model loading, tiny-model and convert gguf (their log lines are checked
    where they run: test_spark_cli, test_gguf_convert, test_runaway_generation)."""
    import pty

    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
        "from flashtts_core.progress import progress\n"
        "with progress('loading Demo from /m', 3, 'flashtts.demo') as p:\n"
        "    p.done('text tokenizer (%d tokens)', 300)\n"
        "    with p.step('codec on %s, float32', 'cpu'):\n"
        "        pass\n"
        "    p.done('LLM on torch, cpu, float32')\n"
    )
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = plain.stderr.strip().splitlines()
    assert [line.rsplit(" (", 1)[0] for line in lines] == [
        "INFO flashtts.demo: loading Demo from /m [1/3] text tokenizer (300 tokens)",
        "INFO flashtts.demo: loading Demo from /m [2/3] codec on cpu, float32",
        "INFO flashtts.demo: loading Demo from /m [3/3] LLM on torch, cpu, float32",
    ]
    assert "%|" not in plain.stderr  # no bar in a log

    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 4096)
        except OSError:  # EIO once the child has closed its end
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(controller)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert "loading Demo from /m: 100%" in screen and "3/3 [" in screen  # tqdm's bar, finished
    assert "loading Demo from /m [2/3] codec on cpu, float32" in screen  # each step printed above it
    assert "INFO flashtts.demo" not in screen  # the bar replaces the log lines
