"""Full-size aligner and duration-model trees, built on the meta device, against upstream's definitions.

Aligner: upstream ``Whisper()`` in tts/modules/aligner/whisper_small.py hard-codes every size; its
state dict has 247 tensors holding 54,596,240 numbers (53,060,240 parameters plus the encoder's
sinusoidal ``positional_embedding`` buffer, 3000 × 512), as in models.md.

Duration model: upstream takes its sizes from duration_lm/config.yaml, which the upstream repository
does not contain. The figures below are what upstream's own ``ARDurPredictor`` (ar_dur_predictor.py)
builds for ``DURATION_CONFIG`` — our defaults: the released encoder as a public module print shows it
(rel_fft, width 512, 4 layers, FFN 1024 with kernel 3, prenet, 174 phones) and an 8 × 512 decoder with
128 codes — counted on 2026-12-02 by building upstream's class on the meta device: 267 tensors,
61,376,641 parameters. The loader reads the real sizes from the checkpoint's tensors in any case.
"""

import dataclasses

import torch
from flashtts_mega.aligner import Aligner
from flashtts_mega.config import AlignerConfig, DurationConfig
from flashtts_mega.duration import DurationModel

DURATION_CONFIG = {  # upstream's config keys for the counts above
    "dur_txt_hs": 512,
    "dur_model_hidden_size": 512,
    "dur_model_layers": 8,
    "dur_code_size": 128,
    "use_rot_embed": True,
    "dur_model_type": "ar",
    "lm_use_enc": True,
    "encoder_type": "rel_fft",
    "hidden_size": 512,
    "ffn_hidden_size": 1024,
    "num_heads": 4,
    "enc_layers": 4,
    "enc_ffn_kernel_size": 3,
    "enc_prenet": True,
    "enc_pre_ln": True,
    "mega_use_char": True,
    "char_dict_size": 4000,
    "ling_labels": ["tone"],
    "ling_label_dict_size": [16],
    "use_pos_embed": False,
    "use_post_ln": False,
    "lm_bias": True,
}


def numel(module: torch.nn.Module) -> int:
    return sum(v.numel() for v in module.state_dict().values())


def test_full_size_aligner_tree():
    with torch.device("meta"):
        model = Aligner()
    state = model.state_dict()
    assert len(state) == 247
    assert numel(model) == 54_596_240
    assert sum(p.numel() for p in model.parameters()) == 53_060_240
    assert (numel(model.encoder), len(model.encoder.state_dict())) == (21_358_592, 97)
    assert (numel(model.decoder), len(model.decoder.state_dict())) == (33_237_648, 150)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["encoder.conv1.weight"] == (512, 80, 3)
    assert shapes["encoder.conv2.weight"] == (512, 512, 3)
    assert shapes["encoder.positional_embedding"] == (3000, 512)
    assert shapes["encoder.blocks.5.mlp.0.weight"] == (2048, 512)
    assert shapes["decoder.token_embedding.weight"] == (6800, 512)
    assert shapes["decoder.positional_embedding"] == (2048, 512)
    assert shapes["decoder.blocks.5.cross_attn.query.weight"] == (512, 512)
    assert shapes["decoder.out_proj.weight"] == (6800, 512)
    assert "decoder.blocks.0.attn.key.bias" not in state and "decoder.blocks.0.attn.value.bias" in state
    assert "decoder.blocks.0.cross_attn_ln.weight" in state and "encoder.blocks.0.cross_attn.query.weight" not in state
    # the loader reads the same sizes back from the tensors: the default configuration
    assert AlignerConfig.from_dict({}, state) == AlignerConfig()
    assert dataclasses.asdict(AlignerConfig()) == {
        "n_mels": 80,
        "n_state": 512,
        "n_audio_ctx": 3000,
        "n_text_ctx": 2048,
        "n_vocab": 6800,
        "n_audio_layer": 6,
        "n_text_layer": 6,
        "n_audio_head": 8,
        "n_text_head": 8,
    }


def test_full_size_duration_tree():
    with torch.device("meta"):
        model = DurationModel()
    state = model.state_dict()
    assert len(state) == 267
    assert numel(model) == sum(p.numel() for p in model.parameters()) == 61_376_641
    parts = {name: numel(child) for name, child in model.named_children()}
    assert parts == {
        "encoder": 16_904_192,
        "char_encoder": 18_863_104,
        "char_empty_embed": 512,
        "ling_label_embed_layers": 9_728,
        "enc_proj": 262_656,
        "code_emb": 66_560,
        "layer_norm": 1_024,
        "layers": 25_202_688,
        "project_out_dim": 66_177,
    }
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["encoder.emb.weight"] == (174, 512)
    assert shapes["encoder.pre.conv_layers.2.weight"] == (512, 512, 5)
    assert shapes["encoder.encoder.attn_layers.3.emb_rel_k"] == (1, 9, 128)
    assert shapes["encoder.encoder.ffn_layers.3.conv_1.weight"] == (1024, 512, 3)
    assert shapes["char_encoder.emb.weight"] == (4000, 512)
    assert shapes["ling_label_embed_layers.tone.weight"] == (19, 512)
    assert shapes["code_emb.weight"] == (130, 512)
    assert shapes["layers.7.op.self_attn.in_proj_weight"] == (1536, 512)
    assert shapes["layers.7.op.self_attn.out_proj.weight"] == (512, 512)
    assert shapes["layers.7.op.ffn.ffn_1.1.weight"] == (2048, 512, 1)
    assert shapes["layers.7.op.ffn.ffn_2.weight"] == (512, 2048)
    assert shapes["project_out_dim.weight"] == (129, 512)
    assert "layers.0.op.self_attn.in_proj_bias" not in state and "layers.0.op.self_attn.out_proj.bias" not in state
    sizes = DurationConfig.from_dict(DURATION_CONFIG, state)
    # upstream's keys give the default configuration, with or without the tensors
    assert sizes == DurationConfig.from_dict(DURATION_CONFIG) == DurationConfig()
    assert (sizes.hidden_size, sizes.dec_hidden_size, sizes.num_layers, sizes.code_size) == (
        DURATION_CONFIG["dur_txt_hs"],
        DURATION_CONFIG["dur_model_hidden_size"],
        DURATION_CONFIG["dur_model_layers"],
        DURATION_CONFIG["dur_code_size"],
    )
    assert (sizes.enc_layers, sizes.enc_num_heads, sizes.enc_ffn_hidden_size) == (4, 4, 1024)
    with torch.device("meta"):
        rebuilt = DurationModel.from_config(sizes)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}
