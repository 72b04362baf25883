"""The sub-models' typed configurations: defaults are the released sizes, config.yaml (ours or
upstream's keys) and the checkpoint's tensor shapes fill them in, the tiny writers round-trip."""

import pytest
import torch
from flashtts_core.errors import ModelLoadError
from flashtts_mega.checkpoint import read_config, save_checkpoint, write_config
from flashtts_mega.config import AlignerConfig, DiTConfig, DurationConfig, WaveVAEConfig
from flashtts_mega.dit import DiT
from flashtts_mega.tiny_model import (
    ALIGNER_TINY,
    DIT_TINY,
    DURATION_TINY,
    WAVVAE_TINY,
    write_tiny_aligner,
    write_tiny_dit,
    write_tiny_duration,
    write_tiny_wavvae,
)
from flashtts_mega.wavvae import WaveVAEDecoder

TINY = [
    (AlignerConfig, ALIGNER_TINY, write_tiny_aligner),
    (DurationConfig, DURATION_TINY, write_tiny_duration),
    (DiTConfig, DIT_TINY, write_tiny_dit),
    (WaveVAEConfig, WAVVAE_TINY, write_tiny_wavvae),
]


@pytest.mark.parametrize("cls, tiny, write", TINY, ids=lambda x: getattr(x, "__name__", ""))
def test_tiny_writers_write_a_config_the_loader_reads(cls, tiny, write, tmp_path):
    write(tmp_path / "m")
    assert cls.from_dict(read_config(tmp_path / "m")) == tiny  # config.yaml alone
    assert cls.from_checkpoint(tmp_path / "m") == tiny  # config.yaml and the tensors agree
    assert cls.from_dict(tiny.to_dict()) == tiny


@pytest.mark.parametrize("cls", [AlignerConfig, DurationConfig, DiTConfig, WaveVAEConfig])
def test_defaults_are_the_released_sizes_and_round_trip(cls):
    default = cls()
    assert cls.from_dict(default.to_dict()) == default
    assert default.CHECKPOINT.endswith(".ckpt") and default.INNER_KEY


def test_upstream_training_keys_are_ignored_and_types_are_checked():
    upstream = {"lr": 0.0001, "max_frames": 3000, "win_size": 960, "frames_multiple": 8, "hop_size": 240}
    assert DiTConfig.from_dict(upstream) == DiTConfig()
    assert DiTConfig.from_dict({"win_size": 1200}).win_size == 1200
    with pytest.raises(ModelLoadError, match="DiTConfig: encoder_dim must be .*int.*'wide'"):
        DiTConfig.from_dict({"encoder_dim": "wide"})
    with pytest.raises(ModelLoadError, match="use_tanh"):
        WaveVAEConfig.from_dict({"melgan_config": {"use_tanh": "yes"}})
    with pytest.raises(ModelLoadError, match="ratios"):
        WaveVAEConfig.from_dict({"ratios": [5, "4"]})
    assert WaveVAEConfig.from_dict({"ratios": [4, 4]}).ratios == (4, 4)


def test_upstream_duration_keys_map_onto_fields():
    config = DurationConfig.from_dict(
        {
            "use_rot_embed": True,
            "dur_txt_hs": 256,
            "dur_model_layers": 3,
            "num_heads": 2,  # upstream's key for the phone encoder's heads
            "mega_use_char": False,
            "ling_labels": ["tone"],
            "ling_label_dict_size": [10],
        }
    )
    assert (config.hidden_size, config.num_layers, config.enc_num_heads) == (256, 3, 2)
    assert config.dec_num_heads == DurationConfig().dec_num_heads
    assert config.char_dict_size == 0 and config.ling_label_dict_size == {"tone": 10}
    with pytest.raises(ModelLoadError, match="use_rot_embed"):
        DurationConfig.from_dict({})


def test_tensor_shapes_win_and_the_rest_comes_from_config_yaml(tmp_path):
    write_tiny_dit(tmp_path / "d")
    folder = tmp_path / "d"
    # a config.yaml that disagrees on a size the tensors show, and sets what no tensor shows
    write_config(folder, {**DIT_TINY.to_dict(), "encoder_dim": 4096, "encoder_n_heads": 4, "win_size": 1200})
    config = DiTConfig.from_checkpoint(folder)
    assert (config.encoder_dim, config.encoder_n_heads, config.win_size) == (128, 4, 1200)
    assert DiT.from_checkpoint(folder).encoder.layers[0].attention.n_heads == 4
    # without the key, the head count is upstream's head width 64 into the width
    write_config(folder, {})
    assert DiTConfig.from_checkpoint(folder).encoder_n_heads == 2


def test_a_config_the_model_refuses_is_a_load_error(tmp_path):
    write_tiny_dit(tmp_path / "d")
    write_config(tmp_path / "d", {"encoder_n_heads": 3})  # 128 wide
    with pytest.raises(ModelLoadError, match="DiT: encoder_dim 128 is not a multiple of encoder_n_heads 3"):
        DiT.from_checkpoint(tmp_path / "d")


def test_wavvae_reads_upstreams_melgan_use_tanh(tmp_path):
    write_tiny_wavvae(tmp_path / "w")
    state = torch.load(tmp_path / "w" / WaveVAEConfig.CHECKPOINT, weights_only=True)["state_dict"]["model_gen"]
    tanh = {k: v for k, v in state.items() if k != "decoder.model_up.13.weight" and k != "decoder.model_up.13.bias"}
    assert WaveVAEConfig.from_dict({}, tanh).use_tanh
    assert not WaveVAEConfig.from_dict({"melgan_config": {"use_tanh": False}}, state).use_tanh
    save_checkpoint(tmp_path / "t" / WaveVAEConfig.CHECKPOINT, WaveVAEConfig.INNER_KEY, tanh)
    write_config(tmp_path / "t", {"melgan_config": {"use_tanh": True}})
    assert isinstance(WaveVAEDecoder.from_checkpoint(tmp_path / "t").decoder.model_up[-1], torch.nn.Tanh)
