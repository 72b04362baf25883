"""Tokens per second and time to first token of every installed LLM backend, on the same model.

    python bench/backends.py                       # tiny random Qwen2 (hidden 128, 2 layers)
    python bench/backends.py --shape qwen2-0.5b    # Qwen2-0.5B-shaped random weights (~2 GB in f32)
    python bench/backends.py --backends torch vllm --concurrency 1 4 16 --max-tokens 128

Each backend loads the same random f32 checkpoint (llama-cpp its f32 GGUF conversion). For every
concurrency c, c requests start together, each sampling ``--max-tokens`` tokens with no stop id;
tokens/s is all tokens over the wall time, TTFT the median time from a request's start to its
first tokens. The output of random weights is noise: only the speed means anything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

SHAPES = {
    "tiny": dict(vocab_size=512, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256),
    "qwen2-0.5b": dict(
        vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864
    ),
}
ALL_BACKENDS = ("torch", "vllm", "llama-cpp", "mlx-lm", "sglang", "tensorrt-llm")


def write_model(path: Path, shape: str) -> Path:
    from flashtts_core.tiny_llm import write_tiny_llm, write_tokenizer

    dims = SHAPES[shape]
    # The tokenizer only has to cover the vocabulary for the GGUF converter; its ids are never decoded.
    # Qwen2's tokenizer class adds <|endoftext|> when it is missing, so it is there from the start.
    extras = [f"<|tok_{i}|>" for i in range(dims["vocab_size"] - 256 - 2)]
    write_tokenizer(path, ["<|endoftext|>", "<|im_end|>"], eos_token="<|im_end|>", extra_tokens=extras)
    write_tiny_llm(path, eos_token_id=257, **dims)
    return path


async def bench_backend(name: str, model: Path, gguf: Path | None, args) -> list[tuple] | str:
    from flashtts_core.backend import BackendConfig
    from flashtts_core.errors import BackendUnavailable
    from flashtts_core.plugins import get_plugin_manager
    from flashtts_core.sampling import SamplingParams

    cls = get_plugin_manager().backends[name]
    try:
        cls.check_available()
    except BackendUnavailable as exc:
        return str(exc)
    if name == "llama-cpp" and gguf is None:
        return "no GGUF conversion of the model"
    path = gguf if name == "llama-cpp" else model
    config = BackendConfig(
        model_path=path,
        device=args.device,
        torch_dtype="float32",
        max_length=2048,
        batch_size=max(args.concurrency),
        seed=0,
    )
    start = time.perf_counter()
    backend = await cls.create(config)
    load = time.perf_counter() - start
    prompt = list(range(40, 40 + args.prompt_tokens))

    async def one(seed: int) -> tuple[float, int]:
        params = SamplingParams(temperature=0.8, top_k=50, top_p=0.95, max_tokens=args.max_tokens, seed=seed)
        begin = time.perf_counter()
        first, count = None, 0
        async for delta in backend.stream(prompt, params):
            first = first if first is not None else time.perf_counter() - begin
            count += len(delta)
        return first or 0.0, count

    rows = []
    try:
        await one(0)  # warm-up: first-call allocations and kernel selection
        for c in args.concurrency:
            begin = time.perf_counter()
            results = await asyncio.gather(*(one(1 + i) for i in range(c)))
            wall = time.perf_counter() - begin
            tokens = sum(n for _, n in results)
            rows.append((name, c, tokens / wall, statistics.median(t for t, _ in results) * 1000, wall, load))
    finally:
        await backend.close()
    return rows


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="flashtts-bench-") as tmp:
        model = write_model(Path(tmp) / "LLM", args.shape)
        gguf = None
        if "llama-cpp" in args.backends:
            try:
                from flashtts_backends.gguf_convert import convert_to_gguf

                gguf = convert_to_gguf(model, outtype="f32", outfile=Path(tmp) / "model-f32.gguf")
            except Exception as exc:  # the other backends still run
                print(f"llama-cpp: no GGUF ({exc})")
        print(
            f"model: random {args.shape} Qwen2 f32; prompt {args.prompt_tokens} tokens, "
            f"{args.max_tokens} new tokens per request; {os.cpu_count()} CPU cores, device {args.device}"
        )
        print(f"{'backend':<14}{'conc':>5}{'tokens/s':>11}{'TTFT ms':>10}{'wall s':>9}{'load s':>8}")
        for name in args.backends:
            result = await bench_backend(name, model, gguf, args)
            if isinstance(result, str):
                print(f"{name:<14} skipped: {result}")
                continue
            for backend, c, tps, ttft, wall, load in result:
                print(f"{backend:<14}{c:>5}{tps:>11.1f}{ttft:>10.1f}{wall:>9.2f}{load:>8.1f}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--backends", nargs="+", default=list(ALL_BACKENDS), choices=ALL_BACKENDS)
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


if __name__ == "__main__":  # vLLM spawns its engine process, which re-imports this module
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    asyncio.run(main(parse_args()))
