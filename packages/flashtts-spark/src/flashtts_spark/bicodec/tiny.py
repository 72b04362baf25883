"""A tiny randomly initialised BiCodec + wav2vec2 in the released Spark-TTS-0.5B directory layout.

Token spaces stay full size (8192 semantic codes, FSQ levels [4]*6 = 4096 global codes, 32 global
tokens) because the LLM's token ids depend on them; only widths and depths shrink.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from .codec_api import WAV2VEC2_DIR
from .model import BiCodec

# Top-level config.yaml of the released model, unchanged.
TOP_LEVEL_CONFIG = {
    "highpass_cutoff_freq": 40,
    "sample_rate": 16000,
    "segment_duration": 2.4,
    "max_val_duration": 12,
    "latent_hop_length": 320,
    "ref_segment_duration": 6,
    "volume_normalize": True,
}

# The released BiCodec/config.yaml of Spark-TTS-0.5B (156.3M parameters).
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

TINY_WIDTH = 32  # wav2vec2 hidden size = BiCodec encoder input

TINY_BICODEC_CONFIG = {
    # The released config, only narrower: the token spaces (quantizer, speaker tokens) stay as released.
    "mel_params": dict(RELEASED_BICODEC_CONFIG["mel_params"]),
    "encoder": {
        "input_channels": TINY_WIDTH,
        "vocos_dim": 32,
        "vocos_intermediate_dim": 64,
        "vocos_num_layers": 2,
        "out_channels": 32,
        "sample_ratios": [1, 1],
    },
    "decoder": {**RELEASED_BICODEC_CONFIG["decoder"], "input_channel": 32, "channels": 64},
    "quantizer": {**RELEASED_BICODEC_CONFIG["quantizer"], "input_dim": 32},
    "speaker_encoder": {
        **RELEASED_BICODEC_CONFIG["speaker_encoder"],
        "out_dim": 32,
        "latent_dim": 16,
        "ecapa_channels": 32,  # not an upstream key: upstream hard-codes 512
    },
    "prenet": {
        "input_channels": 32,
        "vocos_dim": 32,
        "vocos_intermediate_dim": 64,
        "vocos_num_layers": 2,
        "out_channels": 32,
        "condition_dim": 32,
        "sample_ratios": [1, 1],
        "use_tanh_at_final": False,
    },
    "postnet": {
        "input_channels": 32,
        "vocos_dim": 32,
        "vocos_intermediate_dim": 64,
        "vocos_num_layers": 1,
        "out_channels": 32,
        "use_tanh_at_final": False,
    },
}

# As in the released wav2vec2-large-xlsr-53 folder.
PREPROCESSOR_CONFIG = {
    "do_normalize": True,
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0,
    "return_attention_mask": True,
    "sampling_rate": 16000,
}


def write_wav2vec2(
    directory: Path,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int,
    conv_channels: int,
) -> None:
    """A random wav2vec2 folder with XLSR-53's conv kernels/strides (320-sample hop) and layer-norm variant."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        conv_dim=(conv_channels,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        vocab_size=32,
    )
    model = Wav2Vec2Model(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    # The released folder holds a pytorch_model.bin, and from_pretrained reads a plain state dict.
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n")


def write_bicodec(directory: Path, bicodec_config: dict) -> None:
    """config.yaml and BiCodec/ (config.yaml, random model.safetensors) in the released layout."""
    bicodec_dir = directory / "BiCodec"
    bicodec_dir.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(TOP_LEVEL_CONFIG, sort_keys=False))
    (bicodec_dir / "config.yaml").write_text(yaml.safe_dump({"audio_tokenizer": bicodec_config}, sort_keys=False))
    model = BiCodec.from_config(bicodec_config)
    state_dict = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state_dict, bicodec_dir / "model.safetensors")


def write_tiny_bicodec(directory: Path, seed: int = 0) -> Path:
    """Write config.yaml, BiCodec/ and wav2vec2-large-xlsr-53/ of a tiny Spark-TTS codec into `directory`."""
    directory = Path(directory)
    torch.manual_seed(seed)
    write_bicodec(directory, TINY_BICODEC_CONFIG)
    # Narrow and 17 deep so that hidden_states[16] is an intermediate layer, as in the 24-layer original.
    write_wav2vec2(
        directory / WAV2VEC2_DIR,
        hidden_size=TINY_WIDTH,
        num_hidden_layers=17,
        num_attention_heads=2,
        intermediate_size=64,
        conv_channels=32,
    )
    return directory
