"""Orpheus 3B in the end-to-end benchmark: full size, bf16, weights shaped to speak well-formed 7-id
frames and never stop, so ``max_tokens`` fixes the audio; ``/v1/audio/speech`` with a built-in voice."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from pathlib import Path

from e2e_server import (
    AGGREGATE_SECONDS,
    BACKENDS,
    VARIANT_FLAGS,
    Result,
    backend_plan,
    bench_server,
    bytes_per_step,
    gguf_variant,
    head_rows,
    memory_shortfall,
    print_rows,
    rate_against_bound,
    serve_and_measure,
    stream_audio,
)

from tests.server_process import Server

ORPHEUS_VOICE = "tara"
ORPHEUS_TEXT = "FlashTTS measures its own speed, one frame at a time."
# Orpheus on two CPU cores runs at a few tokens/s (3B parameters): by default only this much of it.
ORPHEUS_FULL_DURATIONS = [5]
ORPHEUS_FULL_CONCURRENCY = [1]


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
    server = bench_server(path, backend, dtype, concurrency, work / f"server-orpheus-{name}.log", extra)
    serve_and_measure(server, name, args, result, lambda: measure_orpheus(server, args, result))
    if result.rtf:
        seconds = max(result.rtf)
        tokens = orpheus_max_tokens(seconds)
        audio = (tokens // frames.SLOTS - frames.WINDOW_FRAMES + 1) * frames.SAMPLES_PER_FRAME / 24000  # what it sent
        wall = result.rtf[seconds] * audio
        llm = wall - split["codec_s_per_audio_s_float32"] * audio
        audio = frames.SLOTS * frames.CODEBOOK_SIZE + 1  # audio ids + the stop id: allowed and emitted alike
        rows = head_rows(name, backend, audio, audio)
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
