"""Time MegaTTS3's DiT sampler and WaveVAE decoder at full size (random weights), no server.

    python bench/mega_modules.py dit --frames 250 --steps 2 4 --dtype float32 bfloat16
    python bench/mega_modules.py dit --frames 250 --steps 2 --batch 4
    python bench/mega_modules.py wavvae --frames 125 --dtype float32 bfloat16   # plain vs packed

The DiT's cost is linear in steps after a one-off (phone encoder, conditioning): timing two step
counts gives the per-step cost, and a 32-step call is one-off + 32 × per-step. FLOPs are counted
from the layer shapes (matmuls only).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from flashtts_core.weight_norm import fold_weight_norms
from flashtts_mega.dit import DiT, DiTInput
from flashtts_mega.wavvae import WaveVAEDecoder
from flashtts_mega.wavvae_packed import pack_wavvae


def dit_input(frames: int, seed: int) -> DiTInput:
    g = torch.Generator().manual_seed(seed)
    phones = max(frames // 2, 2)  # ~12 phones per second of 25 Hz latents
    ref = frames // 2
    ph = torch.randint(1, 300, (1, phones), generator=g)
    tone = torch.randint(1, 30, (1, phones), generator=g)
    mel2ph = (torch.arange(4 * frames) * phones // (4 * frames) + 1)[None]
    lat_ctx = F.pad(torch.randn(1, ref, 32, generator=g).repeat(3, 1, 1), (0, 0, 0, frames - ref))
    lat_ctx[1:] = 0
    return DiTInput(
        phone=torch.cat([ph, ph, torch.full_like(ph, 301)]),
        tone=torch.cat([tone, tone, torch.full_like(tone, 31)]),
        lat_ctx=lat_ctx,
        ctx_mask=F.pad(torch.ones(3, ref, 1), (0, 0, 0, frames - ref)),
        dur=mel2ph.repeat(3, 1),
        generator=torch.Generator().manual_seed(seed),
    )


def dit_step_flops(model: DiT, rows: int, frames: int) -> float:
    d = model.encoder_dim
    layers = len(model.encoder.layers)
    ffn = model.encoder.layers[0].feed_forward.w1.out_features
    per_token = layers * (4 * d * d + 2 * d * ffn + 2 * frames * d) + 32 * d + 512 * d + d * 32
    return 2.0 * rows * frames * per_token


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_dit(args) -> None:
    torch.manual_seed(0)
    model = DiT().eval().requires_grad_(False)
    for dtype_name in args.dtype:
        m = model.to(getattr(torch, dtype_name))
        m.sample([dit_input(16, 0)], time_step=1)  # first-call set-up (kernel selection) off the clock
        times = {}
        for steps in args.steps:
            batch = [dit_input(args.frames, seed) for seed in range(args.batch)]
            _, wall, cpu = timed(lambda m=m, batch=batch, steps=steps: m.sample(batch, time_step=steps))
            times[steps] = (wall, cpu)
            print(
                f"DiT {dtype_name} batch {args.batch} × CFG 3, {args.frames} frames, {steps} steps: "
                f"{wall:.1f} s wall, {cpu:.1f} CPU-s"
            )
        flops = dit_step_flops(m, 3 * args.batch, args.frames)
        if len(times) >= 2:
            (s1, (w1, c1)), (s2, (w2, c2)) = sorted(times.items())[:2]
            step_wall, step_cpu = (w2 - w1) / (s2 - s1), (c2 - c1) / (s2 - s1)
            print(
                f"  per step {step_wall:.2f} s wall, {step_cpu:.2f} CPU-s ({flops / 1e9:.0f} GFLOP, "
                f"{flops / step_cpu / 1e9:.0f} GFLOP per CPU-s); 32 steps ≈ {w1 + (32 - s1) * step_wall:.0f} s wall, "
                f"{c1 + (32 - s1) * step_cpu:.0f} CPU-s"
            )


def bench_wavvae(args) -> None:
    """Plain and packed (--wavvae_decoder) decoders in each --dtype, interleaved --repeats times; error
    against the plain float32 decode (max |diff| / peak)."""
    import copy
    import statistics

    torch.manual_seed(0)
    base = WaveVAEDecoder()
    fold_weight_norms(base)
    base.eval().requires_grad_(False)
    variants = {}
    for dtype in args.dtype:
        plain = copy.deepcopy(base).to(getattr(torch, dtype))
        packed = copy.deepcopy(plain)
        pack_wavvae(packed)
        variants[f"plain {dtype}"], variants[f"packed {dtype}"] = plain, packed
    latent = torch.randn(1, args.frames, 32)
    reference = base.decode(latent)
    seconds = reference.shape[1] / 24000
    walls: dict[str, list[float]] = {name: [] for name in variants}
    errors = {}
    for model in variants.values():
        model.decode(latent[:, :4])  # warm-up
    for _ in range(args.repeats):
        for name, model in variants.items():
            wav, wall, _ = timed(lambda model=model: model.decode(latent))
            walls[name].append(wall)
            errors[name] = float((wav - reference).abs().max() / reference.abs().max())
    first = statistics.median(walls[next(iter(variants))])
    print(f"WaveVAE decode of {seconds:.1f} s of audio, medians of {args.repeats} interleaved")
    for name, values in walls.items():
        wall = statistics.median(values)
        print(
            f"  {name:18s} {wall:6.2f} s wall  {wall / seconds:5.2f} s per audio s  x{first / wall:.2f}  "
            f"err/peak {errors[name]:.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["dit", "wavvae"])
    parser.add_argument("--frames", type=int, default=250, help="latent frames (25 per second)")
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", nargs="+", default=["float32"])
    parser.add_argument("--repeats", type=int, default=3, help="wavvae: timed decodes per variant")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with torch.inference_mode():
        bench_dit(args) if args.what == "dit" else bench_wavvae(args)


if __name__ == "__main__":
    main()
