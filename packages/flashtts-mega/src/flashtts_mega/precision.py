"""Which precision MegaTTS3's DiT and WaveVAE run in, and how far a lower one moves the output.

``--torch_dtype auto`` is the engine's own choice (core's ``resolve_dtype`` gives float32 on a CPU for
every engine; the DiT of MegaTTS3 is most of the compute and holds up in bfloat16):

- on a CPU with native bfloat16 (AVX512-BF16 or AMX): the DiT in bfloat16, 2.6× faster than float32,
  and the WaveVAE decoder too, ~1.5× faster (bench/mega_precision.py on the full-size random model),
  both within :data:`TOLERANCE` of float32's output;
- on a CPU without it, float32 (bfloat16 would be emulated: slower, not faster);
- elsewhere (CUDA, MPS), core's choice for the DiT (bfloat16 or float16 on CUDA) and a float32
  WaveVAE, as upstream runs it.

An explicit ``--torch_dtype`` is the DiT's precision wherever it runs; on a CPU with native bfloat16 a
bfloat16 DiT brings the WaveVAE along, anything else leaves it in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from flashtts_core.options import resolve_dtype

# How far the lower precision may move the output from float32's, on the same input and noise
# (bench/mega_precision.py measures it on the full-size random model; the tests on the tiny one):
# - latent: RMS(Δ) / RMS(float32 latent) at most 0.10;
# - waveform: RMS(Δ) / peak of float32's waveform at most 0.05 (-26 dB).
# Measured on the full-size model (8 steps, 4 s past a 2.56 s reference): bfloat16 DiT + WaveVAE 0.051
# and 0.022, the WaveVAE alone 0.0035 of the peak; the sampler's own noise (the next seed) moves them
# by 0.63 and 0.13. So bfloat16 changes the output about a twelfth (latent) and a sixth (waveform) as
# much as a new seed does. The 1e-2-of-peak bound first considered is out of reach for any
# 8-bit-mantissa DiT: classifier-free guidance (weights 1.6 and 2.5) multiplies the network's own
# rounding error about fourfold before it reaches the latent.
TOLERANCE = {"latent_rms": 0.10, "wave_rms": 0.05}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (x86 AVX512-BF16 or AMX tiles), as torch sees it."""
    import torch.cpu

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@dataclass(frozen=True)
class Precision:
    """The DiT's and the WaveVAE's dtypes, and why (for the load log)."""

    dit: torch.dtype
    wavvae: torch.dtype
    reason: str


def choose_precision(torch_dtype: str, device: str, native_bf16: Optional[bool] = None) -> Precision:
    """The precision for ``--torch_dtype`` on ``device`` (already resolved, e.g. ``cpu``, ``cuda:0``).

    ``native_bf16`` is the CPU's answer (:func:`cpu_has_native_bf16` when None); it matters only for
    ``auto`` on a CPU."""
    cpu = device.startswith("cpu")
    if cpu and native_bf16 is None:
        native_bf16 = cpu_has_native_bf16()
    # the WaveVAE follows a bfloat16 DiT only where it was measured to gain: a CPU with native bf16
    wavvae = torch.bfloat16 if cpu and native_bf16 else torch.float32
    if torch_dtype != "auto":
        dit = resolve_dtype(torch_dtype, device)
        return Precision(dit, wavvae if dit == torch.bfloat16 else torch.float32, f"--torch_dtype {torch_dtype}")
    if not cpu:
        dit = resolve_dtype("auto", device)
        return Precision(dit, torch.float32, f"{_name(dit)}: auto on {device}")
    if native_bf16:
        return Precision(torch.bfloat16, wavvae, "bfloat16: CPU has native bf16 (AVX512-BF16/AMX)")
    return Precision(torch.float32, torch.float32, "float32: CPU has no native bf16 (no AVX512-BF16/AMX)")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def latent_error(ours: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(max |Δ| / max |reference|, RMS(Δ) / RMS(reference))."""
    ref = reference.float()
    delta = (ours.float() - ref).abs()
    return float(delta.max() / ref.abs().max()), float(delta.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())


def wave_error(ours: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(max |Δ| / peak, RMS(Δ) / peak), the peak being max |reference|."""
    ref = reference.float()
    delta = (ours.float() - ref).abs()
    peak = ref.abs().max()
    return float(delta.max() / peak), float(delta.pow(2).mean().sqrt() / peak)
