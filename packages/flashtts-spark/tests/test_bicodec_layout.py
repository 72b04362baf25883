"""The full-size BiCodec must have exactly the released checkpoint's tensor names and shapes.

data/bicodec_released_layout.json lists every tensor of the released Spark-TTS-0.5B
BiCodec/model.safetensors (names and shapes, from upstream's module tree); the config below is the
released BiCodec/config.yaml.
"""

import json
import math
from pathlib import Path

import torch
from flashtts_spark.bicodec.model import BiCodec

RELEASED_BICODEC_CONFIG = {
    "mel_params": {
        "sample_rate": 16000,
        "n_fft": 1024,
        "win_length": 640,
        "hop_length": 320,
        "mel_fmin": 10,
        "mel_fmax": None,
        "num_mels": 128,
    },
    "encoder": {
        "input_channels": 1024,
        "vocos_dim": 384,
        "vocos_intermediate_dim": 2048,
        "vocos_num_layers": 12,
        "out_channels": 1024,
        "sample_ratios": [1, 1],
    },
    "decoder": {
        "input_channel": 1024,
        "channels": 1536,
        "rates": [8, 5, 4, 2],
        "kernel_sizes": [16, 11, 8, 4],
    },
    "quantizer": {
        "input_dim": 1024,
        "codebook_size": 8192,
        "codebook_dim": 8,
        "commitment": 0.25,
        "codebook_loss_weight": 2.0,
        "use_l2_normlize": True,
        "threshold_ema_dead_code": 0.2,
    },
    "speaker_encoder": {
        "input_dim": 128,
        "out_dim": 1024,
        "latent_dim": 128,
        "token_num": 32,
        "fsq_levels": [4, 4, 4, 4, 4, 4],
        "fsq_num_quantizers": 1,
    },
    "prenet": {
        "input_channels": 1024,
        "vocos_dim": 384,
        "vocos_intermediate_dim": 2048,
        "vocos_num_layers": 12,
        "out_channels": 1024,
        "condition_dim": 1024,
        "sample_ratios": [1, 1],
        "use_tanh_at_final": False,
    },
    "postnet": {
        "input_channels": 1024,
        "vocos_dim": 384,
        "vocos_intermediate_dim": 2048,
        "vocos_num_layers": 6,
        "out_channels": 1024,
        "use_tanh_at_final": False,
    },
}

LAYOUT = Path(__file__).parent / "data" / "bicodec_released_layout.json"
# Buffers in the checkpoint: BatchNorm statistics, the VQ usage counter, the mel window/filterbank.
NON_PARAMETER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
NON_PARAMETER_KEYS = {
    "quantizer.cluster_size",
    "mel_transformer.spectrogram.window",
    "mel_transformer.mel_scale.fb",
}


def _released() -> dict[str, list[int]]:
    return json.loads(LAYOUT.read_text())


def _full_size_model() -> BiCodec:
    with torch.device("meta"):
        return BiCodec.from_config(RELEASED_BICODEC_CONFIG)


def test_manifest_matches_released_counts():
    released = _released()
    assert len(released) == 842
    n_params = sum(
        math.prod(shape)
        for name, shape in released.items()
        if name not in NON_PARAMETER_KEYS and not name.endswith(NON_PARAMETER_SUFFIXES)
    )
    assert n_params == 156_330_380  # ~156.3M


def test_full_size_state_dict_matches_released_layout():
    released = _released()
    ours = {name: list(t.shape) for name, t in _full_size_model().state_dict().items()}
    assert sorted(set(ours) - set(released)) == []  # unexpected keys
    assert sorted(set(released) - set(ours)) == []  # missing keys
    assert {k: v for k, v in ours.items() if v != released[k]} == {}


def test_full_size_parameter_count():
    model = _full_size_model()
    assert sum(p.numel() for p in model.parameters()) == 156_330_380


def test_weight_norm_folds_away():
    model = _full_size_model()
    assert model.remove_weight_norm() == 32
    keys = model.state_dict().keys()
    assert not any(k.endswith(("weight_g", "weight_v")) for k in keys)
