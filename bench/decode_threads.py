"""Issue 20 item 2: the same decode loop in the main thread and in a worker thread, side by side.

    python bench/decode_threads.py                         # medians of 3, interleaved, ratios to main
    python bench/decode_threads.py --gguf model-q8_0.gguf  # also llama.cpp's decode on that GGUF
    OMP_WAIT_POLICY=PASSIVE python bench/decode_threads.py # an OpenMP setting applies to every arm

A greedy loop with a KV cache over a random Qwen2 of Spark's LLM body (24 x 896, bf16; a small head so
the body dominates), 40 steps per measurement. Arms: the main thread; a fresh worker thread (as the
scheduler runs it); a worker that first calls torch.set_num_threads(2) or (1); a worker started after
the main thread gave up its OpenMP team (flashtts_core.openmp.release_team, what the server does to
every thread but the model's). A worker thread gets its own OpenMP team, so once the main thread has
run torch there are more OpenMP threads than cores and libgomp throttles every team's spin-wait.
With --gguf the same arms run llama.cpp's single-token decode (llama-cpp-python's C API, one thread
per core, the GGUF's weights as stored, no repacking) after the prompt of 300 tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import torch
from flashtts_core.openmp import release_team
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


class LlamaDecode:
    """llama.cpp's greedy-free decode loop (fixed token ids: only the speed matters) on one context."""

    def __init__(self, gguf: str):
        import logging

        import llama_cpp as lc
        import llama_cpp.llama  # noqa: F401  (routes llama.cpp's log to this logger, quieted here)
        from flashtts_backends.llama_cpp_backend import physical_cores

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self.lc = lc
        lc.llama_backend_init()
        params = lc.llama_model_default_params()
        params.use_extra_bufts = False  # as the backend loads on a CPU
        self.model = lc.llama_model_load_from_file(gguf.encode(), params)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {gguf}")
        ctx_params = lc.llama_context_default_params()
        ctx_params.n_ctx, ctx_params.n_batch, ctx_params.n_ubatch = 1024, 512, 512
        ctx_params.n_threads = ctx_params.n_threads_batch = physical_cores()
        ctx_params.no_perf = True
        self.ctx = lc.llama_init_from_model(self.model, ctx_params)
        self.batch = lc.llama_batch_init(512, 0, 1)

    def _decode(self, tokens: list[int], start: int) -> None:
        batch = self.batch
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        if self.lc.llama_decode(self.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def rate(self, threads: int | None = None) -> float:
        del threads  # llama.cpp's team size is the context's n_threads
        self.lc.llama_memory_clear(self.lc.llama_get_memory(self.ctx), True)
        self._decode([100 + i for i in range(300)], 0)
        start = time.perf_counter()
        for step in range(STEPS):
            self._decode([1000 + step], 300 + step)
        return STEPS / (time.perf_counter() - start)


def in_worker(rate, threads: int | None = None) -> float:
    result = []
    worker = threading.Thread(target=lambda: result.append(rate(threads)))
    worker.start()
    worker.join()
    return result[0]


def released_then_worker(rate) -> float:
    release_team()  # the main thread's team goes; the worker's is then the only one
    return in_worker(rate)


def measure(title: str, rate, torch_arms: bool) -> None:
    arms = {"main thread": rate, "worker thread": lambda: in_worker(rate)}
    if torch_arms:
        arms["worker, set_num_threads(2)"] = lambda: in_worker(rate, 2)
        arms["worker, set_num_threads(1)"] = lambda: in_worker(rate, 1)
    arms["worker, main's team released"] = lambda: released_then_worker(rate)
    threads = torch.get_num_threads()
    rate()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(3):
        for name, arm in arms.items():
            rates[name].append(arm())
            torch.set_num_threads(threads)  # a set_num_threads arm changes it for the process
    base = statistics.median(rates["main thread"])
    print(title)
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"  {name:30s}{med:7.1f} tok/s  x{med / base:.2f}   ({', '.join(f'{v:.1f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", help="also measure llama.cpp's decode of this GGUF (e.g. Spark's reduced q8_0)")
    args = parser.parse_args()
    print(
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}"
    )
    model = build()
    measure("torch bf16, Qwen2 24 x 896:", lambda threads=None: decode_rate(model, threads), torch_arms=True)
    if args.gguf:
        measure(f"llama.cpp, {os.path.basename(args.gguf)}:", LlamaDecode(args.gguf).rate, torch_arms=False)


if __name__ == "__main__":
    main()
