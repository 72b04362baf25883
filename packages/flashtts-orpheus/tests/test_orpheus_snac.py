"""The SNAC codec through the `snac` package, loaded from the tiny model's snac/ folder."""

import json
import shutil

import numpy as np
import pytest
import torch
from flashtts_core.errors import ModelLoadError
from flashtts_orpheus import frames
from flashtts_orpheus.frames import frames_to_codes
from flashtts_orpheus.snac_codec import SnacCodec
from flashtts_orpheus.tiny_model import RELEASED_SNAC_CONFIG


@pytest.fixture(scope="module")
def codec(tiny_orpheus):
    return SnacCodec.load(tiny_orpheus / "snac", device="cpu")


def silence_noise_blocks(codec: SnacCodec) -> None:
    """SNAC adds fresh random noise in every decode (NoiseBlock); zero its gain to compare outputs."""
    from snac.layers import NoiseBlock

    with torch.no_grad():
        for module in codec.model.modules():
            if isinstance(module, NoiseBlock):
                module.linear.parametrizations.weight.original0.zero_()


def random_frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, frames.CODEBOOK_SIZE, size=(n, frames.SLOTS))


def test_tiny_snac_keeps_the_released_rates_and_strides(codec):
    assert codec.sample_rate == 24000 and codec.hop_length == 512 and codec.vq_strides == (4, 2, 1)
    assert codec.model.codebook_size == 4096


def test_released_config_builds_the_19_8m_parameter_model():
    from snac import SNAC

    model = SNAC(**RELEASED_SNAC_CONFIG)
    assert model.hop_length == 512
    assert sum(p.numel() for p in model.parameters()) == 19_842_914


def test_the_upstream_loader_reads_the_tiny_folder(tiny_orpheus):
    from snac import SNAC

    model = SNAC.from_pretrained(str(tiny_orpheus / "snac"))
    assert model.sampling_rate == 24000


def test_window_of_four_frames_decodes_to_8192_samples(codec):
    (audio,) = codec.decode([frames_to_codes(random_frames(4, 0))])
    assert audio.dtype == np.float32 and audio.shape == (4 * frames.SAMPLES_PER_FRAME,)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_batched_decode_equals_one_by_one(tiny_orpheus):
    codec = SnacCodec.load(tiny_orpheus / "snac", device="cpu")
    silence_noise_blocks(codec)
    items = [frames_to_codes(random_frames(4, seed)) for seed in range(3)] + [frames_to_codes(random_frames(6, 9))]
    together = codec.decode(items)
    alone = [codec.decode([item])[0] for item in items]
    assert [a.shape for a in together] == [(8192,)] * 3 + [(6 * 2048,)]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_missing_folder_and_mismatched_weights_are_load_errors(tmp_path, tiny_orpheus):
    with pytest.raises(ModelLoadError, match="no SNAC codec"):
        SnacCodec.load(tmp_path / "nowhere")
    broken = tmp_path / "snac"
    shutil.copytree(tiny_orpheus / "snac", broken)
    state = torch.load(broken / "pytorch_model.bin", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, broken / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="missing"):
        SnacCodec.load(broken)
    config = json.loads((broken / "config.json").read_text())
    assert config["vq_strides"] == [4, 2, 1]
