"""End-to-end speed of FlashTTS on full-size random checkpoints, measured through HTTP.

    python bench/e2e.py                                   # everything (tens of minutes on 2 cores)
    python bench/e2e.py --backends torch,llama-cpp-q8_0 --durations 5 --concurrency 1,4
    nox -s bench -- --backends llama-cpp-q8_0 --durations 5 --concurrency 1

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
  bfloat16), and LLM tokens/s derived from the c=1 request time less codec and reference time;
- the machine's memory read bandwidth, and each backend's tokens/s as a fraction of the
  bandwidth bound (bytes of weights read per decode step for that model and dtype).

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
    "llama-cpp-f16": ("llama-cpp", "f16", "f16"),
    "llama-cpp-q8_0": ("llama-cpp", "q8_0", "q8_0"),
    "vllm": ("vllm", None, "float32"),
    "mlx-lm": ("mlx-lm", None, "float32"),
}
BYTES_PER_WEIGHT = {"float32": 4.0, "bfloat16": 2.0, "f16": 2.0, "q8_0": 34 / 32}


@dataclass
class Result:
    backend: str
    status: str = "ok"
    load_s: float | None = None
    rtf: dict = field(default_factory=dict)  # duration -> RTF at c=1
    aggregate: dict = field(default_factory=dict)  # concurrency -> audio s per wall s
    first_audio_s: float | None = None
    peak_rss_gb: float | None = None
    llm_tokens_per_s: float | None = None
    bandwidth_fraction: float | None = None
    bound_tokens_per_s: float | None = None


# -- checkpoints -------------------------------------------------------------------------------


def prepare_spark(cache: Path, ggufs: set[str]) -> Path:
    from checkpoints import write_spark

    model = cache / "spark-0.5b"
    if not (model / "LLM" / "model.safetensors").is_file():
        print(f"writing a full-size random Spark-TTS-0.5B to {model} (about a minute)", flush=True)
        write_spark(model)
    for kind in sorted(ggufs):
        variant = cache / f"spark-0.5b-{kind}"
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
    rows, or only the allowed ones); the embedding table costs one row."""
    config = json.loads((model / "LLM" / "config.json").read_text())
    h, inter, layers, vocab = (
        config["hidden_size"],
        config["intermediate_size"],
        config["num_hidden_layers"],
        config["vocab_size"],
    )
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter
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


def peak_rss_gb(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            pass
    return total / 1e9


class Server:
    def __init__(self, model: Path, backend: str, dtype: str, concurrency: int, log: Path):
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


def run_backend(name: str, model: Path, args, ref: bytes, work: Path, split: dict, bandwidth: float) -> Result:
    from flashtts_core.errors import BackendUnavailable
    from flashtts_core.plugins import get_plugin_manager

    backend, gguf, weight_dtype = BACKENDS[name]
    result = Result(name)
    try:
        get_plugin_manager().backends[backend].check_available()
    except (BackendUnavailable, KeyError) as exc:
        result.status = f"skipped: {exc}"
        return result
    path = model.parent / f"{model.name}-{gguf}" if gguf else model
    dtype = {"torch": args.torch_dtype, "vllm": "float32", "mlx-lm": "float32"}.get(backend, "auto")
    if backend == "torch":
        weight_dtype = args.torch_dtype
    server = Server(path, backend, dtype, max(args.concurrency + [1]), work / f"server-{name}.log")
    try:
        result.load_s = server.wait_healthy(args.load_timeout)
        print(f"  {name}: loaded in {result.load_s:.1f} s", flush=True)
        asyncio.run(measure(server, args, ref, result))
        result.peak_rss_gb = peak_rss_gb(server.proc.pid)
    except Exception as exc:  # the table says so; the next backend still runs
        result.status = f"failed: {str(exc)[:300]}"
    finally:
        server.stop()
    if result.rtf:
        seconds = max(result.rtf)
        wall = result.rtf[seconds] * seconds
        llm = wall - split["codec_s_per_audio_s_float32"] * seconds - split["reference_encode_s"]
        if llm > 0:
            result.llm_tokens_per_s = seconds * TOKENS_PER_SECOND / llm
        rows = 8193 if backend == "torch" else None  # torch computes the allowed rows of the head only
        result.bound_tokens_per_s = bandwidth * 1e9 / bytes_per_step(model, weight_dtype, rows)
        if result.llm_tokens_per_s:
            result.bandwidth_fraction = result.llm_tokens_per_s / result.bound_tokens_per_s
    return result


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[Result], args, machine: dict, split: dict) -> None:
    print()
    print(
        f"Spark-TTS-0.5B (full size, random weights), cloning, CPU: {machine['cores']} cores "
        f"(load average {machine['load_average']}), memory read bandwidth {machine['bandwidth_gbs']:.1f} GB/s"
    )
    print(
        f"codec (BiCodec decode) {split['codec_s_per_audio_s_float32']:.2f} s per audio s in float32, "
        f"{split['codec_s_per_audio_s_bfloat16']:.2f} in bfloat16; reference encode {split['reference_encode_s']:.2f} s"
    )
    rtf_cols = [f"RTF {d}s" for d in args.durations]
    agg_cols = [f"x RT c={c}" for c in args.concurrency]
    header = ["backend", *rtf_cols, *agg_cols, "1st audio s", "load s", "peak RSS GB", "LLM tok/s*", "of bound*"]
    widths = [16] + [12] * (len(header) - 1)
    print("".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for r in results:
        if r.status != "ok" and not r.rtf:
            print(f"{r.backend:<16}{r.status}")
            continue
        cells = [fmt(r.rtf.get(d), ".2f") for d in args.durations]
        cells += [fmt(r.aggregate.get(c), ".2f") for c in args.concurrency]
        cells += [
            fmt(r.first_audio_s, ".2f"),
            fmt(r.load_s, ".1f"),
            fmt(r.peak_rss_gb, ".2f"),
            fmt(r.llm_tokens_per_s, ".1f"),
            "-" if r.bandwidth_fraction is None else f"{r.bandwidth_fraction:.0%}",
        ]
        print(f"{r.backend:<16}" + "".join(c.rjust(12) for c in cells) + ("" if r.status == "ok" else f"  {r.status}"))
    print("* derived: c=1 request time less the codec and reference encode times measured alone ('-' when the")
    print("  machine's load makes that negative); the bound is memory bandwidth / weight bytes read per token")
    for line in args.todo:
        print(line)


def main() -> None:
    args = parse_args()
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        sys.exit(f"unknown backends {unknown}; choose from {', '.join(BACKENDS)}")
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    ggufs = {BACKENDS[b][1] for b in args.backends if BACKENDS[b][1]}
    model = prepare_spark(cache, ggufs)
    bandwidth = memory_bandwidth_gbs()
    machine = {
        "cores": os.cpu_count(),
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "bandwidth_gbs": bandwidth,
        "platform": platform.platform(),
        "processor": platform.processor(),
    }
    print(f"memory read bandwidth {bandwidth:.1f} GB/s; measuring the codec alone", flush=True)
    split = codec_split(model, AGGREGATE_SECONDS)
    ref = reference_wav()
    results = []
    # Server logs are kept beside the JSON: a failed backend's reason is in its log.
    logs = Path(args.json).resolve().parent / "bench-e2e-logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name in args.backends:
        print(f"{name}: starting the server (log: {logs / f'server-{name}.log'})", flush=True)
        results.append(run_backend(name, model, args, ref, logs, split, bandwidth))
    args.todo = [
        "TODO: Orpheus (full-size 3B: ~7 GB in bf16, ~85 LLM tokens per audio second) is not in this "
        "benchmark yet; MegaTTS3 has its own, bench/mega.py"
    ]
    print_table(results, args, machine, split)
    report = {
        "model": "Spark-TTS-0.5B, full-size random weights",
        "machine": machine,
        "codec": split,
        "args": {k: v for k, v in vars(args).items() if k != "todo"},
        "results": [asdict(r) for r in results],
    }
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


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
    return parser.parse_args()


if __name__ == "__main__":
    main()
