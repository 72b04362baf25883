"""The full-size BiCodec must have exactly the released checkpoint's tensor names and shapes.

data/bicodec_released_layout.json lists every tensor of the released Spark-TTS-0.5B
BiCodec/model.safetensors (names and shapes, from upstream's module tree); the config is the
released BiCodec/config.yaml (flashtts_spark.bicodec.tiny.RELEASED_BICODEC_CONFIG).
"""

import json
import math
from pathlib import Path

import torch
from flashtts_spark.bicodec.model import BiCodec
from flashtts_spark.bicodec.tiny import RELEASED_BICODEC_CONFIG

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
