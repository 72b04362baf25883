"""Spark-TTS-0.5B in the end-to-end benchmark: a full-size random checkpoint biased to run to
max_tokens, cloned through ``/clone_voice`` with a reference clip in every request, per backend."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

from e2e_server import (
    AGGREGATE_SECONDS,
    VARIANT_FLAGS,
    Result,
    backend_plan,
    bench_server,
    bytes_per_step,
    head_rows,
    print_rows,
    rate_against_bound,
    serve_and_measure,
)

from tests.server_process import Server

TOKENS_PER_SECOND = 50  # Spark's semantic tokens per second of audio
SAMPLE_RATE = 16000
REFERENCE_SECONDS = 3.0
TEXT = "FlashTTS measures its own speed."


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
    tokenizer.model.pack_decoder()  # --bicodec_decoder packed, the CPU default
    tokenizer.detokenize([item])
    start = time.perf_counter()
    tokenizer.detokenize([item])
    out["codec_s_per_audio_s_packed"] = (time.perf_counter() - start) / seconds
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


def spark_output_rows(model: Path) -> int:
    """Ids Spark's phases can emit (the rows of llama-cpp's reduced GGUF)."""
    from flashtts_spark.vocabulary import SparkVocabulary
    from transformers import AutoTokenizer

    return len(SparkVocabulary(AutoTokenizer.from_pretrained(str(model / "LLM"))).output_ids)


def run_backend(name: str, model: Path, args, ref: bytes, work: Path, split: dict, bandwidth: float) -> Result:
    result, backend, gguf, weight_dtype, dtype = backend_plan(name, args)
    if result.status != "ok":
        return result
    path = model.parent / f"{model.name}-{gguf}" if gguf else model
    extra = VARIANT_FLAGS.get(name, []) + args.server_args
    server = bench_server(path, backend, dtype, max(args.concurrency + [1]), work / f"server-{name}.log", extra)
    serve_and_measure(server, name, args, result, lambda: measure(server, args, ref, result))
    if result.rtf:
        seconds = max(result.rtf)
        wall = result.rtf[seconds] * seconds
        # The warm-up request uploaded the same clip: the server's reference cache skips its encode.
        codec = split["codec_s_per_audio_s_float32" if name.endswith("plaincodec") else "codec_s_per_audio_s_packed"]
        llm = wall - codec * seconds
        # Semantic phase: 8,192 semantic ids + the stop ids; llama-cpp's reduced GGUF holds every id Spark emits.
        rows = head_rows(name, backend, 8193, spark_output_rows(model))
        rate_against_bound(
            result, seconds * TOKENS_PER_SECOND, llm, bandwidth * 1e9 / bytes_per_step(model, weight_dtype, rows)
        )
    return result


def print_table(results: list[Result], args, machine: dict, split: dict) -> None:
    print()
    print(
        f"Spark-TTS-0.5B ({'full size' if args.size == 'full' else 'TINY test model: plumbing only'}, random "
        f"weights), cloning, CPU: {machine['cores']} cores "
        f"(load average {machine['load_average']}), memory read bandwidth {machine['bandwidth_gbs']:.1f} GB/s"
    )
    print(
        f"codec (BiCodec decode) {split['codec_s_per_audio_s_float32']:.2f} s per audio s in float32 as loaded, "
        f"{split['codec_s_per_audio_s_packed']:.2f} packed (the CPU default), "
        f"{split['codec_s_per_audio_s_bfloat16']:.2f} packed in bfloat16; reference encode {split['reference_encode_s']:.2f} s"
    )
    print_rows(results, args.durations, args.concurrency, anon=True)
    print("* derived: c=1 request time less the codec time measured alone (the server caches the reference clip after")
    print("  the warm-up request; '-' when load makes it negative); bound = memory bandwidth / weight bytes per token")


def bench_spark(model: Path, args, logs: Path, bandwidth: float, machine: dict) -> tuple[dict, list[Result]]:
    """Every --backends entry on Spark: (the codec split, a result per backend), the table printed."""
    print(f"memory read bandwidth {bandwidth:.1f} GB/s; measuring the codec alone", flush=True)
    split = codec_split(model, AGGREGATE_SECONDS)
    ref = reference_wav()
    results = []
    for name in args.backends:
        print(f"{name}: starting the server (log: {logs / f'server-{name}.log'})", flush=True)
        results.append(run_backend(name, model, args, ref, logs, split, bandwidth))
    print_table(results, args, machine, split)
    return split, results
