"""What the end-to-end benchmark (``e2e.py``) does alike for every model: the backends it runs, a
``flashtts serve`` started for a measurement and timed to healthy, its memory, the bandwidth bound of an
LLM, and the rows of a results table."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.server_process import Server, spawn_server

AGGREGATE_SECONDS = 5  # audio per request in the concurrency runs
# name -> (flashtts --backend, GGUF type or None, LLM dtype on the wire for the bandwidth bound)
BACKENDS = {
    "torch": ("torch", None, "bfloat16"),
    "torch-int8": ("torch", None, "int8"),
    # The attention transformers runs by default (--llm_attn_implementation sdpa), not the server's eager.
    "torch-sdpa": ("torch", None, "bfloat16"),
    "torch-int8-sdpa": ("torch", None, "int8"),
    # bfloat16 linear layers as loaded (--llm_linear plain), not prepacked for oneDNN: the lever's baseline.
    "torch-plainlinear": ("torch", None, "bfloat16"),
    "llama-cpp-f16": ("llama-cpp", "f16", "f16"),
    "llama-cpp-q8_0": ("llama-cpp", "q8_0", "q8_0"),
    # The same GGUFs with the output head over the whole vocabulary (--llm_gguf_head full): the lever's baseline.
    "llama-cpp-f16-fullhead": ("llama-cpp", "f16", "f16"),
    "llama-cpp-q8_0-fullhead": ("llama-cpp", "q8_0", "q8_0"),
    # The codec on its own threads, not between the LLM's decode steps (--cpu_compute_thread separate).
    "torch-separate": ("torch", None, "bfloat16"),
    "torch-int8-separate": ("torch", None, "int8"),
    "llama-cpp-q8_0-separate": ("llama-cpp", "q8_0", "q8_0"),
    # BiCodec's decoder as loaded (--bicodec_decoder plain), not packed for the CPU: the lever's baseline.
    "torch-int8-plaincodec": ("torch", None, "int8"),
    "llama-cpp-q8_0-plaincodec": ("llama-cpp", "q8_0", "q8_0"),
    "vllm": ("vllm", None, "float32"),
    "mlx-lm": ("mlx-lm", None, "float32"),
}
BYTES_PER_WEIGHT = {"float32": 4.0, "bfloat16": 2.0, "f16": 2.0, "q8_0": 34 / 32, "int8": 1.0}
# Server flags of a variant beyond its backend (added to --server-args, which every server gets).
VARIANT_FLAGS = {
    "torch-int8": ["--llm_quantization", "int8"],
    "torch-sdpa": ["--llm_attn_implementation", "sdpa"],
    "torch-int8-sdpa": ["--llm_quantization", "int8", "--llm_attn_implementation", "sdpa"],
    "torch-plainlinear": ["--llm_linear", "plain"],
    "llama-cpp-f16-fullhead": ["--llm_gguf_head", "full"],
    "llama-cpp-q8_0-fullhead": ["--llm_gguf_head", "full"],
    "torch-separate": ["--cpu_compute_thread", "separate"],
    "torch-int8-separate": ["--llm_quantization", "int8", "--cpu_compute_thread", "separate"],
    "llama-cpp-q8_0-separate": ["--cpu_compute_thread", "separate"],
    "torch-int8-plaincodec": ["--llm_quantization", "int8", "--bicodec_decoder", "plain"],
    "llama-cpp-q8_0-plaincodec": ["--bicodec_decoder", "plain"],
}


def head_rows(name: str, backend: str, allowed: int, emitted: int) -> int | None:
    """Output-head rows a decode step reads: torch computes the phase's allowed rows, llama-cpp (by
    default) every row the engine can emit, a ``-fullhead`` variant and the others the whole vocabulary."""
    if backend == "torch":
        return allowed
    if backend == "llama-cpp" and not name.endswith("-fullhead"):
        return emitted
    return None


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


def bench_server(model: Path, backend: str, dtype: str, concurrency: int, log: Path, extra=()) -> Server:
    """``flashtts serve`` of ``model`` on ``backend``, everything on the CPU, batches as wide as
    ``concurrency``; its output in ``log``. Not waited for: ``serve_and_measure`` times the load."""
    flags = [
        "--model_path", str(model), "--backend", backend,
        "--llm_device", "cpu", "--tokenizer_device", "cpu", "--detokenizer_device", "cpu",
        "--torch_dtype", dtype, "--max_length", "8192",
        "--llm_batch_size", str(max(concurrency, 1)), "--batch_size", str(max(concurrency, 1)),
        *extra,
    ]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    return spawn_server(flags, log.parent, log=log, env=env)


def serve_and_measure(server: Server, name: str, args, result: Result, measurement) -> None:
    """Wait for the server, run ``measurement()`` (a coroutine), read its memory, stop it; a failure
    goes into ``result.status`` so the next backend still runs."""
    try:
        result.load_s = server.wait_healthy(args.load_timeout, tail=1500)
        print(f"  {name}: loaded in {result.load_s:.1f} s", flush=True)
        asyncio.run(measurement())
        result.peak_rss_gb = peak_rss_gb(server.proc.pid)
        result.rss_gb = peak_rss_gb(server.proc.pid, "VmRSS")
        result.rss_anon_gb = peak_rss_gb(server.proc.pid, "RssAnon")
    except Exception as exc:  # the table says so; the next backend still runs
        result.status = f"failed: {str(exc)[:300]}"
    finally:
        server.stop(timeout=30)


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
