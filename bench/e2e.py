"""End-to-end speed of FlashTTS on full-size random checkpoints, measured through HTTP.

    python bench/e2e.py                                   # everything (tens of minutes on 2 cores)
    python bench/e2e.py --backends torch,llama-cpp-q8_0 --durations 5 --concurrency 1,4
    nox -s bench -- --backends llama-cpp-q8_0 --durations 5 --concurrency 1
    python bench/e2e.py --models orpheus --backends torch,llama-cpp-q8_0   # one model
    python bench/e2e.py --size tiny --backends torch --durations 1 --concurrency 2   # smoke, ~1 min

It writes a full-size random Spark-TTS-0.5B once (kept in --cache, ~4 GB with GGUFs), its LLM
biased so that every generation runs to max_tokens (``duration x 50`` semantic tokens: exactly that
much audio), then per backend starts a real ``flashtts serve`` on 127.0.0.1 and measures:

- load: seconds from process start to a healthy /health;
- RTF at concurrency 1 for each --durations (wall time / audio seconds; 1 = real time), cloning a
  voice through ``/clone_voice`` with a reference clip uploaded in every request;
- aggregate audio seconds per wall second at each --concurrency (5 s of audio per request);
- first audio: seconds to the first audio bytes of a streamed ``/clone_voice`` (pcm);
- peak RSS of the server process and its children (VmHWM, summed);
- the split: codec seconds per audio second (BiCodec decode alone, in this process, float32 and
  bfloat16), and LLM tokens/s derived from the c=1 request time less the codec time (every request
  sends the same clip, so after the warm-up the server's reference cache skips its encode);
- the machine's memory read bandwidth, and each backend's tokens/s as a fraction of the
  bandwidth bound (bytes of weights read per decode step for that model and dtype).

``--models`` also runs Orpheus 3B (full size, bf16, 6.6 GB; weights shaped to speak well-formed
7-id frames and never stop, so ``max_tokens`` fixes the audio; /v1/audio/speech with voice tara;
by default 5 s at c=1 only, it is slow on CPU) and MegaTTS3 (upstream's sizes, tiny G2P LLM; /speak
with a saved role and /clone_voice, time_step 32, c=1), each with its own table and JSON section.

Random weights make noise, not speech: only the speed means anything. The machine's other load
distorts wall times; the table says how many CPU cores the run had.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

TOKENS_PER_SECOND = 50  # Spark's semantic tokens per second of audio
SAMPLE_RATE = 16000
AGGREGATE_SECONDS = 5  # audio per request in the concurrency runs
REFERENCE_SECONDS = 3.0
TEXT = "FlashTTS measures its own speed."

# name -> (flashtts --backend, GGUF type or None, LLM dtype on the wire for the bandwidth bound)
BACKENDS = {
    "torch": ("torch", None, "bfloat16"),
    "torch-int8": ("torch", None, "int8"),
    "llama-cpp-f16": ("llama-cpp", "f16", "f16"),
    "llama-cpp-q8_0": ("llama-cpp", "q8_0", "q8_0"),
    "vllm": ("vllm", None, "float32"),
    "mlx-lm": ("mlx-lm", None, "float32"),
}
BYTES_PER_WEIGHT = {"float32": 4.0, "bfloat16": 2.0, "f16": 2.0, "q8_0": 34 / 32, "int8": 1.0}
# Server flags of a variant beyond its backend (added to --server-args, which every server gets).
VARIANT_FLAGS = {"torch-int8": ["--llm_quantization", "int8"]}


@dataclass
class Result:
    backend: str
    status: str = "ok"
    load_s: float | None = None
    rtf: dict = field(default_factory=dict)  # duration -> RTF at c=1
    aggregate: dict = field(default_factory=dict)  # concurrency -> audio s per wall s
    first_audio_s: float | None = None
    peak_rss_gb: float | None = None
    rss_gb: float | None = None  # resident after the runs (steady state), server and children
    rss_anon_gb: float | None = None  # of which anonymous (not memory-mapped weight files)
    llm_tokens_per_s: float | None = None
    bandwidth_fraction: float | None = None
    bound_tokens_per_s: float | None = None


# -- checkpoints -------------------------------------------------------------------------------


def prepare_spark(cache: Path, ggufs: set[str], size: str = "full") -> Path:
    from checkpoints import write_spark

    model = cache / ("spark-0.5b" if size == "full" else "spark-tiny")
    if not (model / "LLM" / "model.safetensors").is_file():
        if size == "full":
            print(f"writing a full-size random Spark-TTS-0.5B to {model} (about a minute)", flush=True)
            write_spark(model)
        else:
            from flashtts_core.plugins import get_plugin_manager

            get_plugin_manager().engines["spark"].write_tiny_model(model)
    for kind in sorted(ggufs):
        variant = cache / f"{model.name}-{kind}"
        gguf = variant / "LLM" / f"model-{kind}.gguf"
        if gguf.is_file():
            continue
        from flashtts_backends.gguf_convert import convert_to_gguf

        print(f"converting the LLM to a {kind} GGUF (about a minute)", flush=True)
        (variant / "LLM").mkdir(parents=True, exist_ok=True)
        # The same model directory, its LLM/ holding exactly one GGUF (llama-cpp reads that file).
        for item in model.iterdir():
            if item.name != "LLM" and not (variant / item.name).exists():
                (variant / item.name).symlink_to(item.resolve())
        for item in (model / "LLM").iterdir():
            if item.suffix != ".gguf" and not (variant / "LLM" / item.name).exists():
                (variant / "LLM" / item.name).symlink_to(item.resolve())
        convert_to_gguf(model / "LLM", outtype=kind, outfile=gguf)
    return model


def reference_wav() -> bytes:
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(REFERENCE_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    audio = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(
        t.size
    )
    buf = io.BytesIO()
    sf.write(buf, audio.astype(np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# -- machine -----------------------------------------------------------------------------------


def memory_bandwidth_gbs() -> float:
    """Read bandwidth: the best of a few sums over a 1 GiB tensor (all cores)."""
    import torch

    x = torch.ones(256 * 1024 * 1024, dtype=torch.float32)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best / 1e9


def bytes_per_step(model: Path, dtype: str, restricted_rows: int | None) -> float:
    """Weights read per decode step: every layer, the final norm and the output head (all of its
    rows, or only the allowed ones); the embedding table costs one row. Tied or untied, the head is
    read once per step; attention widths come from head_dim where the config has one (Llama)."""
    config = llm_config(model)
    h, inter, layers, vocab = (
        config["hidden_size"],
        config["intermediate_size"],
        config["num_hidden_layers"],
        config["vocab_size"],
    )
    head_dim = config.get("head_dim") or h // config["num_attention_heads"]
    q, kv = head_dim * config["num_attention_heads"], head_dim * config["num_key_value_heads"]
    per_layer = h * q * 2 + h * kv * 2 + 3 * h * inter
    head = (restricted_rows or vocab) * h
    return (layers * per_layer + head) * BYTES_PER_WEIGHT[dtype]


def codec_split(model: Path, seconds: int) -> dict:
    """BiCodec decode and wav2vec2+BiCodec reference encode, alone, on this CPU."""
    import numpy as np
    import torch
    from flashtts_spark.bicodec.codec_api import BiCodecTokenizer

    tokenizer = BiCodecTokenizer.load(model, device="cpu")
    rng = np.random.default_rng(0)
    item = (rng.integers(0, 4096, 32), rng.integers(0, 8192, seconds * TOKENS_PER_SECOND))
    out = {}
    tokenizer.detokenize([item])  # warm-up
    start = time.perf_counter()
    tokenizer.detokenize([item])
    out["codec_s_per_audio_s_float32"] = (time.perf_counter() - start) / seconds
    wav = rng.standard_normal(int(REFERENCE_SECONDS * SAMPLE_RATE)).astype(np.float32) * 0.1
    start = time.perf_counter()
    tokenizer.tokenize([wav])
    out["reference_encode_s"] = time.perf_counter() - start
    tokenizer.model.prenet.to(torch.bfloat16)
    tokenizer.model.decoder.to(torch.bfloat16)
    tokenizer.detokenize([item])
    start = time.perf_counter()
    tokenizer.detokenize([item])
    out["codec_s_per_audio_s_bfloat16"] = (time.perf_counter() - start) / seconds
    return out


# -- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    children = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            children += [int(c) for c in text]
    except OSError:
        pass
    return [pid] + [p for c in children for p in process_tree(c)]


def peak_rss_gb(pid: int, field: str = "VmHWM") -> float:
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":"))
        except (OSError, StopIteration):
            pass
    return total / 1e9


class Server:
    def __init__(self, model: Path, backend: str, dtype: str, concurrency: int, log: Path, extra: list[str] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [
            sys.executable, "-m", "flashtts_server.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--model_path", str(model), "--backend", backend,
            "--llm_device", "cpu", "--tokenizer_device", "cpu", "--detokenizer_device", "cpu",
            "--torch_dtype", dtype, "--max_length", "8192",
            "--llm_batch_size", str(max(concurrency, 1)), "--batch_size", str(max(concurrency, 1)),
            *extra,
        ]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
        }
        self.start = time.perf_counter()
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=log.parent)

    def wait_healthy(self, timeout: float) -> float:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200 and r.json().get("status") == "ok":
                    return time.perf_counter() - self.start
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy after {timeout:.0f} s: {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def clone(client, ref: bytes, seconds: float, seed: int, stream: bool = False) -> tuple[float, float, float]:
    """One /clone_voice request: (wall s, audio s, first-audio s)."""
    data = {
        "text": TEXT,
        "reference_text": "A reference clip.",
        "max_tokens": str(int(seconds * TOKENS_PER_SECOND)),
        "stream": "true" if stream else "false",
        "response_format": "pcm",
        "seed": str(seed),
    }
    files = {"reference_audio_file": ("ref.wav", ref, "audio/wav")}
    start = time.perf_counter()
    first = None
    size = 0
    async with client.stream("POST", "/clone_voice", data=data, files=files) as response:
        if response.status_code != 200:
            body = (await response.aread()).decode(errors="replace")[:300]
            raise RuntimeError(f"/clone_voice answered {response.status_code}: {body}")
        rate = int(response.headers.get("X-Sample-Rate", SAMPLE_RATE))
        async for chunk in response.aiter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - start
            size += len(chunk)
    return time.perf_counter() - start, size / 2 / rate, first or 0.0


async def measure(server: Server, args, ref: bytes, result: Result) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=server.url, timeout=3600) as client:
        await clone(client, ref, 1, seed=0)  # warm-up: first-call allocations, head sub-matrix
        for seconds in args.durations:
            wall, audio, _ = await clone(client, ref, seconds, seed=1)
            result.rtf[seconds] = wall / audio
            print(f"  {result.backend}: {seconds} s of audio at c=1: {wall:.1f} s (RTF {wall / audio:.2f})", flush=True)
        if args.stream:
            _, _, first = await clone(client, ref, AGGREGATE_SECONDS, seed=2, stream=True)
            result.first_audio_s = first
            print(f"  {result.backend}: first streamed audio after {first:.2f} s", flush=True)
        for c in args.concurrency:
            start = time.perf_counter()
            outs = await asyncio.gather(*(clone(client, ref, AGGREGATE_SECONDS, seed=10 + i) for i in range(c)))
            wall = time.perf_counter() - start
            result.aggregate[c] = sum(audio for _, audio, _ in outs) / wall
            print(f"  {result.backend}: c={c}: {result.aggregate[c]:.2f} audio s per wall s", flush=True)


def serve_and_measure(server: Server, name: str, args, result: Result, measurement) -> None:
    """Wait for the server, run ``measurement()`` (a coroutine), read its memory, stop it; a failure
    goes into ``result.status`` so the next backend still runs."""
    try:
        result.load_s = server.wait_healthy(args.load_timeout)
        print(f"  {name}: loaded in {result.load_s:.1f} s", flush=True)
        asyncio.run(measurement())
        result.peak_rss_gb = peak_rss_gb(server.proc.pid)
        result.rss_gb = peak_rss_gb(server.proc.pid, "VmRSS")
        result.rss_anon_gb = peak_rss_gb(server.proc.pid, "RssAnon")
    except Exception as exc:  # the table says so; the next backend still runs
        result.status = f"failed: {str(exc)[:300]}"
    finally:
        server.stop()


def rate_against_bound(result: Result, tokens: int, llm_seconds: float, bound_tokens_per_s: float) -> None:
    """The LLM's derived tokens/s and its fraction of the bandwidth bound ('-' when impossible)."""
    result.bound_tokens_per_s = bound_tokens_per_s
    if llm_seconds <= 0:
        return
    result.llm_tokens_per_s = tokens / llm_seconds
    result.bandwidth_fraction = result.llm_tokens_per_s / bound_tokens_per_s
    if result.bandwidth_fraction > 1:  # impossible: the codec timing alone was disturbed by load
        result.llm_tokens_per_s = result.bandwidth_fraction = None


def backend_plan(name: str, args) -> tuple[Result, str, str | None, str, str]:
    """(result, flashtts backend, GGUF type, weight dtype for the bound, --torch_dtype) of a
    --backends entry; the result says "skipped: ..." when that backend is not installed."""
    from flashtts_core.errors import BackendUnavailable
    from flashtts_core.plugins import get_plugin_manager

    backend, gguf, weight_dtype = BACKENDS[name]
    result = Result(name)
    try:
        get_plugin_manager().backends[backend].check_available()
    except (BackendUnavailable, KeyError) as exc:
        result.status = f"skipped: {exc}"
    dtype = {"torch": args.torch_dtype, "vllm": "float32", "mlx-lm": "float32"}.get(backend, "auto")
    if backend == "torch" and weight_dtype != "int8":
        weight_dtype = args.torch_dtype
    return result, backend, gguf, weight_dtype, dtype


def run_backend(name: str, model: Path, args, ref: bytes, work: Path, split: dict, bandwidth: float) -> Result:
    result, backend, gguf, weight_dtype, dtype = backend_plan(name, args)
    if result.status != "ok":
        return result
    path = model.parent / f"{model.name}-{gguf}" if gguf else model
    extra = VARIANT_FLAGS.get(name, []) + args.server_args
    server = Server(path, backend, dtype, max(args.concurrency + [1]), work / f"server-{name}.log", extra)
    serve_and_measure(server, name, args, result, lambda: measure(server, args, ref, result))
    if result.rtf:
        seconds = max(result.rtf)
        wall = result.rtf[seconds] * seconds
        # The warm-up request uploaded the same clip: the server's reference cache skips its encode.
        llm = wall - split["codec_s_per_audio_s_float32"] * seconds
        rows = 8193 if backend == "torch" else None  # torch computes the allowed rows of the head only
        rate_against_bound(
            result, seconds * TOKENS_PER_SECOND, llm, bandwidth * 1e9 / bytes_per_step(model, weight_dtype, rows)
        )
    return result


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_rows(results: list, durations: list, concurrency: list, anon: bool) -> None:
    """One line per backend: RTF per duration, aggregate per concurrency, then first audio, load,
    memory and the LLM's rate against its bound (a failed backend prints its reason)."""
    header = ["backend", *(f"RTF {d}s" for d in durations), *(f"x RT c={c}" for c in concurrency)]
    header += [
        "1st audio s",
        "load s",
        "peak RSS GB",
        "RSS GB",
        *(["anon GB"] if anon else []),
        "LLM tok/s*",
        "of bound*",
    ]
    print("".join(h.rjust(12) if i else h.ljust(16) for i, h in enumerate(header)))
    for r in results:
        if r.status != "ok" and not r.rtf:
            print(f"{r.backend:<16}{r.status}")
            continue
        cells = [fmt(r.rtf.get(d), ".2f") for d in durations]
        cells += [fmt(r.aggregate.get(c), ".2f") for c in concurrency]
        cells += [fmt(r.first_audio_s, ".2f"), fmt(r.load_s, ".1f"), fmt(r.peak_rss_gb, ".2f"), fmt(r.rss_gb, ".2f")]
        cells += [fmt(r.rss_anon_gb, ".2f")] if anon else []
        cells += [
            fmt(r.llm_tokens_per_s, ".1f"),
            "-" if r.bandwidth_fraction is None else f"{r.bandwidth_fraction:.0%}",
        ]
        print(f"{r.backend:<16}" + "".join(c.rjust(12) for c in cells) + ("" if r.status == "ok" else f"  {r.status}"))


def print_table(results: list[Result], args, machine: dict, split: dict) -> None:
    print()
    print(
        f"Spark-TTS-0.5B ({'full size' if args.size == 'full' else 'TINY test model: plumbing only'}, random "
        f"weights), cloning, CPU: {machine['cores']} cores "
        f"(load average {machine['load_average']}), memory read bandwidth {machine['bandwidth_gbs']:.1f} GB/s"
    )
    print(
        f"codec (BiCodec decode) {split['codec_s_per_audio_s_float32']:.2f} s per audio s in float32, "
        f"{split['codec_s_per_audio_s_bfloat16']:.2f} in bfloat16; reference encode {split['reference_encode_s']:.2f} s"
    )
    print_rows(results, args.durations, args.concurrency, anon=True)
    print("* derived: c=1 request time less the codec time measured alone (the server caches the reference clip after")
    print("  the warm-up request; '-' when load makes it negative); bound = memory bandwidth / weight bytes per token")


# -- Orpheus and MegaTTS3 ------------------------------------------------------------------------

MODELS = ("spark", "orpheus", "mega")
ORPHEUS_VOICE = "tara"
ORPHEUS_TEXT = "FlashTTS measures its own speed, one frame at a time."
# Orpheus on two CPU cores runs at a few tokens/s (3B parameters): by default only this much of it.
ORPHEUS_FULL_DURATIONS = [5]
ORPHEUS_FULL_CONCURRENCY = [1]
MEGA_TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home again."
MEGA_FULL_CONCURRENCY = [1]  # one full-size DiT request is minutes of CPU work at 32 steps
MEGA_RATE = 24000


@dataclass
class MegaResult:
    backend: str = "torch"
    status: str = "ok"
    load_s: float | None = None
    add_speaker_s: float | None = None  # the reference aligned once and saved as a role
    audio_s: float | None = None  # audio per request (the random duration model decides it)
    rtf: dict = field(default_factory=dict)  # route (speak: saved role; clone: aligned per request) -> RTF at c=1
    aggregate: dict = field(default_factory=dict)  # concurrency -> audio s per wall s (/speak)
    first_audio_s: float | None = None
    peak_rss_gb: float | None = None
    rss_gb: float | None = None


def llm_config(model: Path) -> dict:
    """The LLM's config.json: in LLM/ for Spark, the model folder itself for Orpheus."""
    path = model / "LLM" / "config.json"
    return json.loads((path if path.is_file() else model / "config.json").read_text())


def llm_parameters(model: Path) -> int:
    """Parameters of the LLM from its config (layers, embedding, and the head when it is untied)."""
    config = llm_config(model)
    h, vocab = config["hidden_size"], config["vocab_size"]
    head_dim = config.get("head_dim") or h // config["num_attention_heads"]
    attn = h * head_dim * (config["num_attention_heads"] * 2 + config["num_key_value_heads"] * 2)
    per_layer = attn + 3 * h * config["intermediate_size"]
    tables = vocab * h * (1 if config.get("tie_word_embeddings", True) else 2)
    return config["num_hidden_layers"] * per_layer + tables


def memory_shortfall(model: Path, weight_dtype: str) -> str | None:
    """Why a backend's copy of the LLM would not fit in this machine's available memory, or None."""
    need = llm_parameters(model) * BYTES_PER_WEIGHT[weight_dtype] * 1.15 + 1.5e9  # + KV cache, codec, runtime
    with open("/proc/meminfo") as fh:
        available = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    if need <= available:
        return None
    return f"skipped: needs ~{need / 1e9:.1f} GB in {weight_dtype}, {available / 1e9:.1f} GB available"


def gguf_variant(model: Path, kind: str) -> Path:
    """``model`` (linked) beside a ``kind`` GGUF of its LLM, for an LLM that is the model folder itself."""
    from flashtts_backends.gguf_convert import convert_to_gguf

    variant = model.parent / f"{model.name}-{kind}"
    gguf = variant / f"model-{kind}.gguf"
    if not gguf.is_file():
        print(f"converting {model.name}'s LLM to a {kind} GGUF", flush=True)
        variant.mkdir(parents=True, exist_ok=True)
        for item in model.iterdir():
            if item.suffix != ".gguf" and not (variant / item.name).exists():
                (variant / item.name).symlink_to(item.resolve())
        convert_to_gguf(model, outtype=kind, outfile=gguf)
    return variant


def prepare_orpheus(cache: Path, ggufs: set[str], size: str) -> Path:
    from checkpoints import write_orpheus

    model = cache / ("orpheus-3b" if size == "full" else "orpheus-tiny")
    if not (model / ".complete").is_file():
        if size == "full":
            print(f"writing a full-size random Orpheus 3B to {model} (~6.6 GB, a few minutes)", flush=True)
            write_orpheus(model)
        else:
            from flashtts_core.plugins import get_plugin_manager

            get_plugin_manager().engines["orpheus"].write_tiny_model(model)
        (model / ".complete").write_text("ok")
    for kind in sorted(ggufs):
        gguf_variant(model, kind)
    return model


def prepare_mega(cache: Path, size: str) -> Path:
    model = cache / ("mega-full" if size == "full" else "mega-tiny")
    if size == "full":
        from mega import write_full_size

        return write_full_size(model)  # its own .complete marker
    if not (model / ".complete").is_file():
        from flashtts_mega.tiny_model import write_tiny_mega

        write_tiny_mega(model)
        (model / ".complete").write_text("ok")
    return model


def orpheus_max_tokens(seconds: float) -> int:
    """Tokens for ``seconds`` of audio: 7 per frame of 2048 samples, plus the 3 frames the first
    decode window (4 frames) takes before its first chunk."""
    import math

    from flashtts_orpheus import frames

    return frames.SLOTS * (math.ceil(seconds * 24000 / frames.SAMPLES_PER_FRAME) + frames.WINDOW_FRAMES - 1)


def snac_split(model: Path) -> dict:
    """SNAC decode alone, as the engine runs it at c=1: one 4-frame window per frame of audio. Timed in
    a fresh process, so nothing this one ran before (BiCodec in two dtypes) shares its thread pool or
    allocator state."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_snac_split_here, model).result()


def _snac_split_here(model: Path) -> dict:
    import numpy as np
    from flashtts_orpheus import frames
    from flashtts_orpheus.snac_codec import SnacCodec

    codec = SnacCodec.load(model / "snac", device="cpu")
    rng = np.random.default_rng(0)
    window = frames.frames_to_codes(rng.integers(0, frames.CODEBOOK_SIZE, (frames.WINDOW_FRAMES, frames.SLOTS)))
    codec.decode([window])  # warm-up
    # The best of a few: on a shared machine single windows measured 0.05 to 2.5 s.
    per_window = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        codec.decode([window])
        per_window = min(per_window, time.perf_counter() - start)
    return {"codec_s_per_audio_s_float32": per_window * 24000 / frames.SAMPLES_PER_FRAME, "window_s": per_window}


async def stream_audio(client, url: str, rate: int, **request) -> tuple[float, float, float]:
    """One streamed pcm request: (wall s, audio s, first-audio s)."""
    start = time.perf_counter()
    first = None
    size = 0
    async with client.stream("POST", url, **request) as response:
        if response.status_code != 200:
            body = (await response.aread()).decode(errors="replace")[:300]
            raise RuntimeError(f"{url} answered {response.status_code}: {body}")
        async for chunk in response.aiter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - start
            size += len(chunk)
    if not size:
        raise RuntimeError(f"{url} sent no audio")
    return time.perf_counter() - start, size / 2 / rate, first or 0.0


def speech(client, seconds: float, seed: int):
    """/v1/audio/speech with a built-in voice, run to max_tokens (the random LLM never stops)."""
    body = {
        "model": "orpheus", "input": ORPHEUS_TEXT, "voice": ORPHEUS_VOICE, "response_format": "pcm",
        "stream": True, "max_tokens": orpheus_max_tokens(seconds), "seed": seed,
    }  # fmt: skip
    return stream_audio(client, "/v1/audio/speech", 24000, json=body)


async def measure_orpheus(server: Server, args, result: Result) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=server.url, timeout=3600) as client:
        await speech(client, 0.5, seed=0)  # warm-up: first-call allocations, head sub-matrix
        # Every request streams: its wall time gives the RTF, its first chunk the first audio.
        for seconds in args.orpheus_durations:
            wall, audio, first = await speech(client, seconds, seed=1)
            result.rtf[seconds] = wall / audio
            if result.first_audio_s is None or seconds == AGGREGATE_SECONDS:
                result.first_audio_s = first
            print(f"  {result.backend}: {audio:.1f} s of audio at c=1: {wall:.1f} s (RTF {wall / audio:.2f}), "
                  f"first audio {first:.2f} s", flush=True)  # fmt: skip
        for c in args.orpheus_concurrency:
            if c == 1 and AGGREGATE_SECONDS in result.rtf:  # the same request was just measured
                result.aggregate[c] = 1 / result.rtf[AGGREGATE_SECONDS]
                continue
            start = time.perf_counter()
            outs = await asyncio.gather(*(speech(client, AGGREGATE_SECONDS, seed=10 + i) for i in range(c)))
            result.aggregate[c] = sum(audio for _, audio, _ in outs) / (time.perf_counter() - start)
            print(f"  {result.backend}: c={c}: {result.aggregate[c]:.2f} audio s per wall s", flush=True)


def run_orpheus_backend(name: str, model: Path, args, work: Path, split: dict, bandwidth: float) -> Result:
    from flashtts_orpheus import frames

    result, backend, gguf, weight_dtype, dtype = backend_plan(name, args)
    if result.status != "ok":
        return result
    path = gguf_variant(model, gguf) if gguf else model
    if args.size == "full":
        # torch reads the checkpoint's bfloat16 even when it quantizes it afterwards.
        shortfall = memory_shortfall(model, args.torch_dtype if backend == "torch" else weight_dtype)
        if shortfall:
            result.status = shortfall
            return result
    extra = VARIANT_FLAGS.get(name, []) + args.server_args
    concurrency = max(args.orpheus_concurrency + [1])
    server = Server(path, backend, dtype, concurrency, work / f"server-orpheus-{name}.log", extra)
    serve_and_measure(server, name, args, result, lambda: measure_orpheus(server, args, result))
    if result.rtf:
        seconds = max(result.rtf)
        tokens = orpheus_max_tokens(seconds)
        audio = (tokens // frames.SLOTS - frames.WINDOW_FRAMES + 1) * frames.SAMPLES_PER_FRAME / 24000  # what it sent
        wall = result.rtf[seconds] * audio
        llm = wall - split["codec_s_per_audio_s_float32"] * audio
        rows = frames.SLOTS * frames.CODEBOOK_SIZE + 1 if backend == "torch" else None  # audio ids + the stop id
        rate_against_bound(result, tokens, llm, bandwidth * 1e9 / bytes_per_step(model, weight_dtype, rows))
    return result


def print_orpheus_table(results: list[Result], args, split: dict) -> None:
    print()
    if args.size == "full":
        what = "Orpheus 3B (full size: Llama-3.2-3B shape, vocab 156,940, bf16 weights; SNAC 24 kHz at release size"
    else:
        what = "Orpheus (TINY test model: plumbing only, the speeds mean nothing"
    print(f"{what}; random weights), voice {ORPHEUS_VOICE!r} via /v1/audio/speech, streamed pcm")
    print(
        f"plan: {', '.join(f'{d} s' for d in args.orpheus_durations)} at c=1, concurrency "
        f"{', '.join(map(str, args.orpheus_concurrency))}"
        + (" (the smaller default plan for a 3B on CPU: --orpheus-durations / --orpheus-concurrency)"
           if args.size == "full" else "")
    )  # fmt: skip
    print(
        f"codec (SNAC decode alone, best of 10 4-frame windows) {split['codec_s_per_audio_s_float32']:.2f} s per audio s"
    )
    print_rows(results, args.orpheus_durations, args.orpheus_concurrency, anon=False)
    print("* derived: c=1 request time less SNAC's time alone, 7 tokens per 2048-sample frame; c=1 aggregate is")
    print(f"  the {AGGREGATE_SECONDS} s RTF request's own figure; bound = memory bandwidth / weight bytes per token")


def bench_orpheus(cache: Path, args, logs: Path, bandwidth: float) -> dict:
    ggufs = {BACKENDS[b][1] for b in args.backends if BACKENDS[b][1]}
    model = prepare_orpheus(cache, ggufs, args.size)
    split = snac_split(model)
    results = []
    for name in args.backends:
        print(f"orpheus {name}: starting the server (log: {logs / f'server-orpheus-{name}.log'})", flush=True)
        results.append(run_orpheus_backend(name, model, args, logs, split, bandwidth))
    print_orpheus_table(results, args, split)
    return {
        "model": f"Orpheus 3B, {args.size}-size random weights" + (", bf16" if args.size == "full" else ""),
        "voice": ORPHEUS_VOICE,
        "codec": split,
        "durations": args.orpheus_durations,
        "concurrency": args.orpheus_concurrency,
        "results": [asdict(r) for r in results],
    }


def mega_speak(client, seed: int, time_step: int, text: str = MEGA_TEXT):
    body = {"name": "bench", "text": text, "time_step": time_step, "seed": seed, "response_format": "pcm",
            "stream": True}  # fmt: skip
    return stream_audio(client, "/speak", MEGA_RATE, json=body)


def mega_clone(client, files: dict, seed: int, time_step: int):
    form = {"text": MEGA_TEXT, "time_step": str(time_step), "seed": str(seed), "response_format": "pcm",
            "stream": "true"}  # fmt: skip
    return stream_audio(client, "/clone_voice", MEGA_RATE, data=form, files=files)


async def measure_mega(server: Server, model: Path, args, result: MegaResult) -> None:
    import httpx

    wav = ("example.wav", (model / "example.wav").read_bytes(), "audio/wav")
    latent = ("example.npy", (model / "example.npy").read_bytes(), "application/octet-stream")
    steps = args.mega_time_step
    async with httpx.AsyncClient(base_url=server.url, timeout=3600) as client:
        start = time.perf_counter()
        form, files = {"name": "bench", "overwrite": "true"}, {"audio_file": wav, "latent_file": latent}
        added = await client.post("/add_speaker", data=form, files=files)
        if added.status_code != 200:
            raise RuntimeError(f"/add_speaker answered {added.status_code}: {added.text[:300]}")
        result.add_speaker_s = time.perf_counter() - start
        await mega_speak(client, seed=0, time_step=2, text="Hi.")  # warm-up
        wall, audio, first = await mega_speak(client, seed=1, time_step=steps)
        result.audio_s, result.first_audio_s, result.rtf["speak"] = audio, first, wall / audio
        print(f"  mega: /speak (saved role), {audio:.1f} s of audio: {wall:.1f} s (RTF {wall / audio:.2f}), "
              f"first audio {first:.2f} s", flush=True)  # fmt: skip
        wall, audio, _ = await mega_clone(client, {"reference_audio_file": wav, "latent_file": latent}, 1, steps)
        result.rtf["clone"] = wall / audio
        print(f"  mega: /clone_voice, {audio:.1f} s of audio: {wall:.1f} s (RTF {wall / audio:.2f})", flush=True)
        for c in args.mega_concurrency:
            if c == 1:  # the /speak request above
                result.aggregate[c] = 1 / result.rtf["speak"]
                continue
            start = time.perf_counter()
            outs = await asyncio.gather(*(mega_speak(client, seed=10 + i, time_step=steps) for i in range(c)))
            result.aggregate[c] = sum(audio for _, audio, _ in outs) / (time.perf_counter() - start)
            print(f"  mega: c={c}: {result.aggregate[c]:.2f} audio s per wall s", flush=True)


def bench_mega(cache: Path, args, logs: Path) -> dict:
    from flashtts_core.errors import BackendUnavailable
    from flashtts_core.plugins import get_plugin_manager

    if "mega" not in get_plugin_manager().engines:
        return {"results": [asdict(MegaResult(status="skipped: flashtts-mega is not installed"))]}
    model = prepare_mega(cache, args.size)
    result = MegaResult()
    try:
        get_plugin_manager().backends["torch"].check_available()
    except (BackendUnavailable, KeyError) as exc:
        result.status = f"skipped: {exc}"
    else:
        # The backend runs only the G2P LLM, tiny here and a small share of the time: torch only.
        extra = ["--role_dir", str(logs / "mega-roles"), "--wait_timeout", "0.05", *args.server_args]
        concurrency = max(args.mega_concurrency + [1])
        print(f"mega torch: starting the server (log: {logs / 'server-mega-torch.log'})", flush=True)
        server = Server(model, "torch", args.mega_dtype, concurrency, logs / "server-mega-torch.log", extra)
        try:
            result.load_s = server.wait_healthy(args.load_timeout)
            print(f"  mega: loaded in {result.load_s:.1f} s", flush=True)
            asyncio.run(measure_mega(server, model, args, result))
            result.peak_rss_gb = peak_rss_gb(server.proc.pid)
            result.rss_gb = peak_rss_gb(server.proc.pid, "VmRSS")
        except Exception as exc:
            result.status = f"failed: {str(exc)[:300]}"
        finally:
            server.stop()
    print()
    if args.size == "full":
        what = "MegaTTS3 (full size: DiT 459M, WaveVAE decoder 226M, aligner 55M, duration LM at upstream's sizes"
        what += "; the G2P LLM is TINY"
    else:
        what = "MegaTTS3 (TINY test model: plumbing only, the speeds mean nothing"
    print(f"{what}; random weights), torch backend, --torch_dtype {args.mega_dtype}, time_step {args.mega_time_step}")
    agg_cols = [f"x RT c={c}" for c in args.mega_concurrency]
    header = ["backend", "audio s", "RTF speak", "RTF clone", *agg_cols, "1st audio s", "add role s", "load s",
              "peak RSS GB", "RSS GB"]  # fmt: skip
    print("".join(h.rjust(12) if i else h.ljust(16) for i, h in enumerate(header)))
    if result.status != "ok" and not result.rtf:
        print(f"{result.backend:<16}{result.status}")
    else:
        cells = [fmt(result.audio_s, ".1f"), fmt(result.rtf.get("speak"), ".2f"), fmt(result.rtf.get("clone"), ".2f")]
        cells += [fmt(result.aggregate.get(c), ".2f") for c in args.mega_concurrency]
        cells += [fmt(result.first_audio_s, ".2f"), fmt(result.add_speaker_s, ".1f"), fmt(result.load_s, ".1f"),
                  fmt(result.peak_rss_gb, ".2f"), fmt(result.rss_gb, ".2f")]  # fmt: skip
        status = "" if result.status == "ok" else f"  {result.status}"
        print(f"{result.backend:<16}" + "".join(c.rjust(12) for c in cells) + status)
    print("speak: a saved role (aligned once, 'add role s'); clone: /clone_voice aligns the reference in the request;")
    print("audio length is what the random duration model decides; the c=1 aggregate is the speak request's figure")
    return {
        "model": f"MegaTTS3, {args.size}-size random weights" + (", tiny G2P LLM" if args.size == "full" else ""),
        "time_step": args.mega_time_step,
        "dtype": args.mega_dtype,
        "concurrency": args.mega_concurrency,
        "results": [asdict(result)],
    }


def main() -> None:
    args = parse_args()
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        sys.exit(f"unknown backends {unknown}; choose from {', '.join(BACKENDS)}")
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        sys.exit(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    ggufs = {BACKENDS[b][1] for b in args.backends if BACKENDS[b][1]}
    model = prepare_spark(cache, ggufs, args.size) if "spark" in args.models else None
    bandwidth = memory_bandwidth_gbs()
    machine = {
        "cores": os.cpu_count(),
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "bandwidth_gbs": bandwidth,
        "platform": platform.platform(),
        "processor": platform.processor(),
    }
    # Server logs are kept beside the JSON: a failed backend's reason is in its log.
    logs = Path(args.json).resolve().parent / "bench-e2e-logs"
    logs.mkdir(parents=True, exist_ok=True)
    report = {
        "model": f"Spark-TTS-0.5B, {args.size}-size random weights",
        "machine": machine,
        "codec": {},
        "args": vars(args),
        "results": [],
    }
    if model is not None:
        print(f"memory read bandwidth {bandwidth:.1f} GB/s; measuring the codec alone", flush=True)
        split = codec_split(model, AGGREGATE_SECONDS)
        ref = reference_wav()
        results = []
        for name in args.backends:
            print(f"{name}: starting the server (log: {logs / f'server-{name}.log'})", flush=True)
            results.append(run_backend(name, model, args, ref, logs, split, bandwidth))
        print_table(results, args, machine, split)
        report.update(codec=split, results=[asdict(r) for r in results])
        write_report(report, args.json)
    # Each model's section is written as soon as it is measured: a long run keeps what it has.
    if "orpheus" in args.models:
        report["orpheus"] = bench_orpheus(cache, args, logs, bandwidth)
        write_report(report, args.json)
    if "mega" in args.models:
        report["mega"] = bench_mega(cache, args, logs)
        write_report(report, args.json)


def write_report(report: dict, path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2))
    print(f"wrote {path}", flush=True)


def csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backends", type=csv(str), default=list(BACKENDS), help=f"comma-separated: {', '.join(BACKENDS)}"
    )
    parser.add_argument("--durations", type=csv(int), default=[5, 20], help="seconds of audio at c=1 (comma-separated)")
    parser.add_argument("--concurrency", type=csv(int), default=[4, 16], help="concurrent requests (comma-separated)")
    parser.add_argument("--no-stream", dest="stream", action="store_false", help="skip the first-audio measurement")
    parser.add_argument("--torch-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument(
        "--cache", default=str(Path.home() / ".cache" / "flashtts" / "bench"), help="checkpoints kept here"
    )
    parser.add_argument("--json", default="bench-e2e.json", help="where the results go")
    parser.add_argument("--load-timeout", type=float, default=600)
    parser.add_argument(
        "--server-args",
        type=str.split,
        default=[],
        help='flags every server gets, one string: --server-args "--detokenizer_dtype bfloat16"',
    )
    parser.add_argument("--models", type=csv(str), default=list(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument(
        "--size", choices=["full", "tiny"], default="full", help="tiny: the engines' test models (a quick smoke run)"
    )
    parser.add_argument(
        "--orpheus-durations", type=csv(int), help=f"Orpheus c=1 seconds (full size default {ORPHEUS_FULL_DURATIONS})"
    )
    parser.add_argument(
        "--orpheus-concurrency", type=csv(int), help=f"Orpheus concurrency (full size {ORPHEUS_FULL_CONCURRENCY})"
    )
    parser.add_argument(
        "--mega-concurrency", type=csv(int), help=f"MegaTTS3 concurrency (full size default {MEGA_FULL_CONCURRENCY})"
    )
    parser.add_argument("--mega-time-step", type=int, default=32, help="MegaTTS3 DiT steps (upstream 32)")
    parser.add_argument("--mega-dtype", default="auto", help="MegaTTS3 --torch_dtype (auto: float32 on CPU)")
    args = parser.parse_args()
    # Full size, Orpheus (3B) and MegaTTS3 (a DiT) run a smaller plan than Spark; tiny runs Spark's.
    full = args.size == "full"
    if args.orpheus_durations is None:
        args.orpheus_durations = ORPHEUS_FULL_DURATIONS if full else args.durations
    if args.orpheus_concurrency is None:
        args.orpheus_concurrency = ORPHEUS_FULL_CONCURRENCY if full else args.concurrency
    if args.mega_concurrency is None:
        args.mega_concurrency = MEGA_FULL_CONCURRENCY if full else args.concurrency
    return args


if __name__ == "__main__":
    main()
