"""The torch backend's linear layers on a CPU, side by side: Spark's LLM body (24 layers of Qwen2
0.5B's seven projections), each layer's weights its own (715 MB in bfloat16: nothing stays cached).

    python bench/torch_linear.py                  # one row (a decode step) and a 300-row prompt
    python bench/torch_linear.py --rows 1 8 32 300 --threads 2

Arms, for every row count: bfloat16 ``F.linear`` (the plain model); bfloat16 through oneDNN with the
weight prepacked once (``torch.ops.mkldnn._linear_pointwise``); int8 through aten's
``_weight_int8pack_mm`` (``--llm_quantization int8``'s decode kernel); int8 dequantized to bfloat16
per call, then one matmul (its prompt path). Each figure: the median of 5 interleaved runs over
all 24 layers, the weight bytes read per second, and that against the machine's read bandwidth
(measured here by summing a 1 GiB tensor), the bound a decode step's linears cannot beat.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [(896, 896), (128, 896), (128, 896), (896, 896), (4864, 896), (4864, 896), (896, 4864)]  # q k v o gate up down
LAYERS = 24


def read_bandwidth() -> float:
    """Bytes per second a sum over 1 GiB of float32 reads (median of 5)."""
    data = torch.ones(1 << 28)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - start)
    return data.numel() * 4 / statistics.median(times)


def build_layers():
    torch.manual_seed(0)
    layers = []
    for _ in range(LAYERS):
        layer = []
        for out_features, in_features in SHAPES:
            weight = torch.randn(out_features, in_features) * 0.02
            scale = weight.abs().amax(1) / 127
            layer.append(
                dict(
                    bf16=weight.to(torch.bfloat16),
                    packed=torch.ops.mkldnn._reorder_linear_weight(weight.to(torch.bfloat16), None),
                    q=(weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8),
                    scale=scale.to(torch.bfloat16),
                )
            )
        layers.append(layer)
    return layers


ARMS = {
    "bf16 F.linear": (2, lambda x, w: F.linear(x, w["bf16"])),
    "bf16 oneDNN prepacked": (2, lambda x, w: torch.ops.mkldnn._linear_pointwise(x, w["packed"], None, "none", [], "")),
    "int8 kernel": (1, lambda x, w: torch.ops.aten._weight_int8pack_mm(x, w["q"], w["scale"])),
    "int8 dequantized": (1, lambda x, w: torch.mm(x, (w["q"].to(torch.bfloat16) * w["scale"][:, None]).t())),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 300])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bandwidth = read_bandwidth()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, read bandwidth {bandwidth / 1e9:.1f} GB/s")
    layers = build_layers()
    weights = sum(o * i for o, i in SHAPES) * LAYERS
    for rows in args.rows:
        inputs = {i: torch.randn(rows, i, dtype=torch.bfloat16) for i in (896, 4864)}
        times: dict[str, list[float]] = {name: [] for name in ARMS}
        with torch.inference_mode():
            for _ in range(args.repeats):
                for name, (_, fn) in ARMS.items():
                    start = time.perf_counter()
                    for layer in layers:
                        for w, (_, in_features) in zip(layer, SHAPES):
                            fn(inputs[in_features], w)
                    times[name].append(time.perf_counter() - start)
        base = statistics.median(times["bf16 F.linear"])
        print(f"\n{rows} row(s), all {LAYERS} layers:")
        for name, (bytes_per_weight, _) in ARMS.items():
            t = statistics.median(times[name])
            rate = weights * bytes_per_weight / t
            print(
                f"  {name:22s} {t * 1e3:8.1f} ms  {base / t:5.2f}x F.linear  "
                f"{rate / 1e9:5.1f} GB/s of weights = {rate / bandwidth:4.0%} of the read bandwidth"
            )


if __name__ == "__main__":
    main()
