"""The WaveVAE decoder on a tiny random checkpoint in upstream's layout."""

import pytest
import torch
from flashtts_core.errors import ModelLoadError
from flashtts_mega.checkpoint import load_state_dict, read_config, save_checkpoint
from flashtts_mega.tiny_model import write_tiny_wavvae
from flashtts_mega.wavvae import CHECKPOINT, INNER_KEY, WaveVAEDecoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_vae_dir(tiny_checkpoint):
    return tiny_checkpoint("wavvae", write_tiny_wavvae)


@pytest.fixture(scope="module")
def vae(tiny_vae_dir):
    return WaveVAEDecoder.from_checkpoint(tiny_vae_dir)


def test_tiny_checkpoint_has_upstreams_layout(tiny_vae_dir, vae):
    assert sorted(p.name for p in tiny_vae_dir.iterdir()) == ["config.yaml", CHECKPOINT]
    config = read_config(tiny_vae_dir)
    assert config["vae_stride"] * config["hop_size"] == 960 == vae.hop_length
    assert config["melgan_config"]["use_tanh"] is False
    raw = torch.load(tiny_vae_dir / CHECKPOINT, weights_only=True)
    keys = set(raw["state_dict"][INNER_KEY])
    # decoder only, as released: no encoder, no proj_to_z; weight norm as weight_g / weight_v
    assert {k.split(".")[0] for k in keys} == {"proj_to_decoder", "latent_upsampler", "decoder"}
    assert sum(k.endswith("weight_g") for k in keys) == sum(k.endswith("weight_v") for k in keys) == 84
    assert len(keys) == 256
    # folded after loading: plain weights only
    assert not any("weight_g" in k or "weight_v" in k for k in vae.state_dict())
    assert (tiny_vae_dir / CHECKPOINT).stat().st_size < 4_000_000


def test_decode_25_frames_to_one_second(vae):
    latent = torch.randn(2, 25, 32, generator=torch.Generator().manual_seed(0))
    wav = vae.decode(latent)
    assert wav.shape == (2, 24000) and wav.dtype == torch.float32 and bool(torch.isfinite(wav).all())
    assert wav.abs().max() > 0
    assert torch.allclose(vae.decode(latent[1:]), wav[1:], atol=1e-5)  # batch rows are independent
    assert vae.decode(torch.randn(1, 3, 32)).shape == (1, 2880)


def test_decoding_past_the_prompt_gives_the_same_samples(vae):
    latent = torch.randn(1, 30, 32, generator=torch.Generator().manual_seed(1))
    whole = vae.decode(latent)
    for start in (3, 20):
        tail = vae.decode(latent, start=start)
        assert tail.shape == (1, (30 - start) * 960)
        assert torch.allclose(tail, whole[:, start * 960 :], atol=1e-5), (tail - whole[:, start * 960 :]).abs().max()
    with pytest.raises(ValueError, match="start 30 is outside"):
        vae.decode(latent, start=30)


def test_folded_weights_equal_the_weight_norm_formula(tiny_vae_dir, vae):
    state = load_state_dict(tiny_vae_dir / CHECKPOINT, INNER_KEY)
    g, v = state["decoder.model_up.1.weight_g"], state["decoder.model_up.1.weight_v"]
    expected = g * v / v.flatten(1).norm(dim=1)[:, None, None]
    assert torch.allclose(vae.decoder.model_up[1].weight, expected, atol=1e-6)


def test_bfloat16_decoder_returns_float32(tiny_vae_dir, vae):
    bf16 = WaveVAEDecoder.from_checkpoint(tiny_vae_dir, dtype=torch.bfloat16)
    latent = torch.randn(1, 5, 32)
    wav = bf16.decode(latent)
    assert wav.dtype == torch.float32 and wav.shape == (1, 4800)
    ref = vae.decode(latent)
    assert (wav - ref).abs().mean() < 0.1 * ref.abs().mean() + 1e-6


def test_bad_latent_shape(vae):
    with pytest.raises(ValueError, match=r"latent must be \[B, T, 32\]"):
        vae.decode(torch.randn(25, 32))


def test_strict_loading_names_the_problem(tiny_vae_dir, tmp_path):
    state = load_state_dict(tiny_vae_dir / CHECKPOINT, INNER_KEY)
    folder = tmp_path / "wavvae"
    folder.mkdir()
    (folder / "config.yaml").write_text((tiny_vae_dir / "config.yaml").read_text())
    # upstream's full WavVAE_V3 also holds the (unreleased) encoder: those keys are not ours to ignore
    save_checkpoint(folder / CHECKPOINT, INNER_KEY, state | {"proj_to_z.weight": torch.ones(64, 512)})
    with pytest.raises(
        ModelLoadError, match=r"WaveVAE decoder checkpoint .*decoder\.ckpt.*unexpected keys: proj_to_z\.weight"
    ):
        WaveVAEDecoder.from_checkpoint(folder)
    save_checkpoint(folder / CHECKPOINT, INNER_KEY, {k: v for k, v in state.items() if "model_up.5.block2" not in k})
    with pytest.raises(ModelLoadError, match=r"missing keys: decoder\.model_up\.5\.block2"):
        WaveVAEDecoder.from_checkpoint(folder)
    save_checkpoint(
        folder / CHECKPOINT, INNER_KEY, {k: v for k, v in state.items() if not k.startswith("decoder.model_up.12")}
    )
    with pytest.raises(ModelLoadError, match=r"does not have the decoder's layout.*model_up\.12\.weight_v"):
        WaveVAEDecoder.from_checkpoint(folder)


def test_large_checkpoints_load_onto_meta_by_assignment(tiny_vae_dir, vae, monkeypatch):
    from flashtts_mega import checkpoint

    monkeypatch.setattr(checkpoint, "META_BUILD_PARAMETERS", 0)
    assigned = WaveVAEDecoder.from_checkpoint(tiny_vae_dir)
    assert not any(p.is_meta for p in assigned.parameters())
    latent = torch.randn(1, 4, 32)
    assert torch.equal(assigned.decode(latent), vae.decode(latent))


def test_packed_decoder_computes_the_float32_decode(tiny_vae_dir, vae):
    """--wavvae_decoder packed (the CPU default): channels-last convolutions and polyphase upsampling
    (output_padding 1 at ×5 and ×3) only reorder the sums: within float32 rounding of the plain decode."""
    from flashtts_mega.wavvae_packed import PackedWaveVAE, pack_wavvae

    packed = WaveVAEDecoder.from_checkpoint(tiny_vae_dir)
    assert pack_wavvae(packed) is True and pack_wavvae(packed) is False  # a second call keeps the packed view
    assert isinstance(packed.decoder, PackedWaveVAE)
    latent = torch.randn(2, 30, 32, generator=torch.Generator().manual_seed(2))
    for start in (0, 12):
        ref, out = vae.decode(latent, start=start), packed.decode(latent, start=start)
        assert out.dtype == torch.float32 and out.shape == ref.shape == (2, (30 - start) * 960)
        peak = float(ref.abs().max())
        assert peak > 0 and float((out - ref).abs().max()) <= 1e-5 * peak
    assert torch.allclose(packed.decode(latent[1:]), packed.decode(latent)[1:], atol=1e-5)  # rows independent


def test_packed_bfloat16_decoder_stays_near_float32(tiny_vae_dir, vae):
    from flashtts_mega.wavvae_packed import pack_wavvae

    bf16 = WaveVAEDecoder.from_checkpoint(tiny_vae_dir, dtype=torch.bfloat16)
    pack_wavvae(bf16)
    latent = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(3))
    wav, ref = bf16.decode(latent), vae.decode(latent)
    assert wav.dtype == torch.float32 and wav.shape == ref.shape
    assert (wav - ref).abs().mean() < 0.1 * ref.abs().mean() + 1e-6


@pytest.mark.asyncio
@pytest.mark.parametrize("layout,packed", [("auto", True), ("packed", True), ("plain", False)])
async def test_engine_option_picks_the_wavvae_layout(tiny_mega, tmp_path, layout, packed):
    from flashtts_core.options import EngineOptions
    from flashtts_mega.wavvae_packed import PackedWaveVAE
    from flashtts_server.runtime import TTSRuntime

    options = EngineOptions(
        model_path=tiny_mega, backend="torch", detokenizer_device="cpu", role_dir=tmp_path, wavvae_decoder=layout
    )
    rt = await TTSRuntime.load(options)
    try:
        assert isinstance(rt.engine.wavvae.decoder, PackedWaveVAE) is packed
    finally:
        await rt.close()
