"""MegaTTS3's precision: ``--torch_dtype auto`` on a CPU, and how far it moves the tiny model's output."""

import pytest
import torch
from flashtts_mega.dit import DiT
from flashtts_mega.pipeline import probe_input
from flashtts_mega.precision import (
    TOLERANCE,
    choose_precision,
    cpu_has_native_bf16,
    latent_error,
    wave_error,
)
from flashtts_mega.tiny_model import write_tiny_dit, write_tiny_wavvae
from flashtts_mega.wavvae import WaveVAEDecoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("native", "dtype", "why"),
    [
        (True, torch.bfloat16, "bfloat16: CPU has native bf16"),
        (False, torch.float32, "float32: CPU has no native bf16"),
    ],
)
def test_auto_on_a_cpu_is_bfloat16_only_where_the_cpu_has_it(native, dtype, why):
    precision = choose_precision("auto", "cpu", native_bf16=native)
    assert precision.dit == precision.wavvae == dtype
    assert precision.reason.startswith(why)


def test_the_capability_check_answers_on_this_machine():
    assert isinstance(cpu_has_native_bf16(), bool)
    assert choose_precision("auto", "cpu").dit == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)


@pytest.mark.parametrize(
    ("asked", "native", "dit", "wavvae"),
    [
        ("float32", True, torch.float32, torch.float32),
        ("float32", False, torch.float32, torch.float32),
        ("bfloat16", True, torch.bfloat16, torch.bfloat16),  # the WaveVAE follows where it gains
        ("bfloat16", False, torch.bfloat16, torch.float32),
        ("float16", True, torch.float16, torch.float32),
    ],
)
def test_an_explicit_dtype_is_the_dits_whatever_the_cpu(asked, native, dit, wavvae):
    precision = choose_precision(asked, "cpu", native_bf16=native)
    assert (precision.dit, precision.wavvae) == (dit, wavvae)
    assert precision.reason == f"--torch_dtype {asked}"


def test_auto_off_the_cpu_keeps_cores_choice():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    precision = choose_precision("auto", "cuda", native_bf16=True)
    assert precision.dit in (torch.bfloat16, torch.float16) and precision.wavvae == torch.float32


def test_the_new_cpu_default_stays_within_the_tolerance_of_float32(tiny_checkpoint):
    dit_dir = tiny_checkpoint("diffusion_transformer", write_tiny_dit)
    vae_dir = tiny_checkpoint("wavvae", write_tiny_wavvae)
    precision = choose_precision("auto", "cpu", native_bf16=True)
    reference = torch.randn(1, 50, 32, generator=torch.Generator().manual_seed(3))
    item = probe_input(reference, seconds=2.0, seed=0)
    outputs = []
    for dit_dtype, vae_dtype in ((torch.float32, torch.float32), (precision.dit, precision.wavvae)):
        dit = DiT.from_checkpoint(dit_dir, "cpu", dit_dtype)
        vae = WaveVAEDecoder.from_checkpoint(vae_dir, "cpu", vae_dtype)
        (latent,) = dit.sample([item], time_step=8, generator=torch.Generator().manual_seed(0))
        latent = torch.cat([reference[0], latent[reference.size(1) :]])  # as the engine decodes it
        outputs.append((latent, vae.decode(latent[None], start=reference.size(1))[0]))
    (latent32, wav32), (latent, wav) = outputs
    assert wav.shape == wav32.shape == (2 * 24000,)
    assert 0 < latent_error(latent, latent32)[1] <= TOLERANCE["latent_rms"]
    assert 0 < wave_error(wav, wav32)[1] <= TOLERANCE["wave_rms"]
