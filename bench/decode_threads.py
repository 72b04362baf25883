"""Issue 20 item 2: the same torch decode loop in the main thread and in a worker thread, side by side.

    python bench/decode_threads.py                         # medians of 3, interleaved, ratios to main
    OMP_WAIT_POLICY=PASSIVE python bench/decode_threads.py # an OpenMP setting applies to every arm

A greedy loop with a KV cache over a random Qwen2 of Spark's LLM body (24 x 896, bf16; a small head so
the body dominates), 40 steps per measurement. Arms: the main thread; a fresh worker thread (as the
scheduler runs it); a worker that first calls torch.set_num_threads(2) or (1). A worker thread gets its
own OpenMP team, so once the main thread has run torch there are more OpenMP threads than cores.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

STEPS = 40


def build():
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=8192,
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
    )
    return Qwen2ForCausalLM(config).to(torch.bfloat16).eval()


def decode_rate(model, threads: int | None = None) -> float:
    """Tokens per second of a greedy decode loop in the calling thread."""
    if threads:
        torch.set_num_threads(threads)
    with torch.inference_mode():
        out = model(torch.randint(0, 8192, (1, 32)), use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(STEPS):
            out = model(token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return STEPS / (time.perf_counter() - start)


def in_worker(model, threads: int | None = None) -> float:
    result = []
    worker = threading.Thread(target=lambda: result.append(decode_rate(model, threads)))
    worker.start()
    worker.join()
    return result[0]


def main() -> None:
    model = build()
    arms = {
        "main thread": lambda: decode_rate(model),
        "worker thread": lambda: in_worker(model),
        "worker, set_num_threads(2)": lambda: in_worker(model, 2),
        "worker, set_num_threads(1)": lambda: in_worker(model, 1),
    }
    decode_rate(model)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(3):
        for name, arm in arms.items():
            rates[name].append(arm())
    base = statistics.median(rates["main thread"])
    print(
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}"
    )
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"  {name:28s}{med:7.1f} tok/s  x{med / base:.2f}   ({', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
