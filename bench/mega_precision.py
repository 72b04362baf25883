"""MegaTTS3's DiT and WaveVAE in float32 and bfloat16 on one fixed input: how far the lower precision
moves the latent and the waveform, and what it saves per stage.

    python bench/mega_precision.py                      # full-size random modules, CPU, 8 steps, 4 s
    python bench/mega_precision.py --time-step 32 --seconds 8
    python bench/mega_precision.py --size tiny          # the tiny test model (plumbing only)

The full-size DiT and WaveVAE decoder are bench/mega.py's (written once into --workdir, ~3 GB). The
input is fixed and needs neither the aligner, the G2P nor the duration model: the reference is the
folder's example.npy latent with evenly spread random phones over it, the segment ``--seconds`` of
random phones of even length (``flashtts_mega.pipeline.probe_input``); every run draws the
same noise (``--seed``). Each variant runs the DiT sampler and decodes what follows the reference, as
the engine does; errors are against the float32 run:

- latent: max |Δ| / max |latent|, and RMS(Δ) / RMS(latent);
- waveform: max |Δ| / max |wav| and RMS(Δ) / max |wav| (before the loudness matching, which only scales);
- as a yardstick, float32 again with the next seed: how far the sampler's own noise moves the output.

Random weights make the audio noise: only the error and the speed mean anything. Each stage is timed
once after one untimed warm-up forward of the same shapes (the first bf16 call builds oneDNN kernels).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "flashtts-bench-mega")
    parser.add_argument("--time-step", type=int, default=8, help="DiT steps (upstream 32)")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio to generate past the reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.time_step < 1 or args.seconds <= 0:
        parser.error("--time-step must be >= 1 and --seconds > 0")

    import numpy as np
    import torch
    from flashtts_mega.dit import DiT
    from flashtts_mega.pipeline import probe_input
    from flashtts_mega.precision import TOLERANCE, choose_precision, latent_error, wave_error
    from flashtts_mega.wavvae import WaveVAEDecoder

    if args.threads:
        torch.set_num_threads(args.threads)
    from mega import bench_model

    model = bench_model(args.workdir, args.size)

    import torch.cpu

    latent_ref = torch.from_numpy(np.load(model / "example.npy"))
    item = probe_input(latent_ref, args.seconds, args.seed)
    ref_frames = latent_ref.shape[1]
    print(
        f"{model} ({args.size}); {args.seconds:.2f} s past a {ref_frames / 25:.2f} s reference "
        f"({item.lat_ctx.size(1)} latent frames, batch 3), {args.time_step} steps; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads on {os.cpu_count()} cores, avx512_bf16 "
        f"{torch.cpu._is_avx512_bf16_supported()}, amx {torch.cpu._is_amx_tile_supported()}; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    def run_dit(dit) -> tuple[torch.Tensor, float]:
        dit.sample([item], time_step=1, generator=torch.Generator().manual_seed(args.seed))  # warm-up
        start = time.perf_counter()
        (latent,) = dit.sample([item], time_step=args.time_step, generator=torch.Generator().manual_seed(args.seed))
        return latent, time.perf_counter() - start

    def run_decode(vae, latent) -> tuple[torch.Tensor, float]:
        full = latent.clone()
        full[:ref_frames] = latent_ref[0]  # as the engine: the real reference latent in the prompt part
        vae.decode(full[None, : ref_frames + 8], start=ref_frames)  # warm-up
        start = time.perf_counter()
        wav = vae.decode(full[None], start=ref_frames)[0].reshape(-1)
        return wav, time.perf_counter() - start

    latents: dict[str, tuple[torch.Tensor, float]] = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        dit = DiT.from_checkpoint(model / "diffusion_transformer", "cpu", dtype)
        latents[name] = run_dit(dit)
        print(f"DiT {name}: {latents[name][1]:.1f} s", flush=True)
        if name == "float32":  # the yardstick: how far the sampler's own noise moves the output
            (other,) = dit.sample(
                [item], time_step=args.time_step, generator=torch.Generator().manual_seed(args.seed + 1)
            )
            latents["float32, next seed"] = other, float("nan")
        del dit
    vaes = {
        name: WaveVAEDecoder.from_checkpoint(model / "wavvae", "cpu", dtype)
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))
    }
    variants = (
        ("float32", "float32", "float32"),
        ("DiT bf16", "bfloat16", "float32"),
        ("DiT bf16 + WaveVAE bf16", "bfloat16", "bfloat16"),
        ("WaveVAE bf16 alone", "float32", "bfloat16"),
        ("float32, next seed", "float32, next seed", "float32"),
    )
    wavs: dict[str, tuple[torch.Tensor, float]] = {}
    for label, dit_name, vae_name in variants:
        wavs[label] = run_decode(vaes[vae_name], latents[dit_name][0])
    seconds = wavs["float32"][0].numel() / 24000
    reference_latent, reference_wav = latents["float32"][0], wavs["float32"][0]
    print()
    print(f"{'variant':<26}{'DiT s':>8}{'decode s/audio s':>18}{'latent max':>12}{'latent rms':>12}"
          f"{'wav max':>10}{'wav rms':>10}")  # fmt: skip
    for label, dit_name, _ in variants:
        latent, dit_s = latents[dit_name]
        wav, decode_s = wavs[label]
        lat_max, lat_rms = latent_error(latent, reference_latent)
        wav_max, wav_rms = wave_error(wav, reference_wav)
        print(f"{label:<26}{dit_s:8.1f}{decode_s / seconds:18.2f}{lat_max:12.2e}{lat_rms:12.2e}"
              f"{wav_max:10.2e}{wav_rms:10.2e}")  # fmt: skip
    print(f"({seconds:.2f} s of audio decoded; errors relative to float32's: latent max |d|/max |x| and "
          f"RMS(d)/RMS(x), waveform max |d|/peak and RMS(d)/peak; 'next seed' is float32 with seed + 1: "
          f"the spread of the sampler's own noise, untimed)")  # fmt: skip
    chosen = choose_precision("auto", "cpu")
    print(f"tolerance (flashtts_mega.precision): latent rms <= {TOLERANCE['latent_rms']}, wav rms <= "
          f"{TOLERANCE['wave_rms']}; --torch_dtype auto here: DiT {chosen.dit}, WaveVAE {chosen.wavvae} ({chosen.reason})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
