"""Full-size DiT and WaveVAE decoder trees (built on the meta device) against upstream's definitions.

Expected counts: /work/shared/reference/models.md (counted from upstream's code on random weights):
DiT 484 tensors / 458,834,496 parameters; WaveVAE decoder 256 tensors / 226,081,636 parameters with
84 weight-norm layers saved as weight_g / weight_v. Per-module counts below are worked out from
upstream's layer definitions (tts/modules/llm_dit/*, tts/modules/wavvae/decoder/*).
"""

import pytest
import torch
from flashtts_mega.config import DiTConfig, WaveVAEConfig
from flashtts_mega.dit import DiT
from flashtts_mega.wavvae import WaveVAEDecoder


def linear(i, o):
    return i * o + o


def conv(i, o, k):
    return i * o * k + o


def wn_conv(i, o, k, g=None):
    return i * o * k + (o if g is None else g) + o  # weight_v, weight_g (one per output unless given), bias


@pytest.fixture(scope="module")
def dit_tree():
    with torch.device("meta"):
        return DiT()


@pytest.fixture(scope="module")
def vae_tree():
    with torch.device("meta"):
        return WaveVAEDecoder()


def counts(model):
    return {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}


def test_dit_tree_matches_upstream(dit_tree):
    state = dit_tree.state_dict()
    assert len(state) == 484
    assert sum(v.numel() for v in state.values()) == 458_834_496
    d = 1024
    layer = 4 * linear(d, d) + linear(d, 2048) + linear(2048, d) + linear(d, 6 * d)
    rel_layer = 4 * conv(d, d, 1) + 2 * 9 * 256 + 2 * 2 * d + conv(d, 2048, 3) + conv(2048, d, 1)
    expected = {
        "ctx_mask_proj": linear(1, 16),
        "local_cond_project": linear(32 + 16, 512),
        "encoder": 24 * layer + linear(d, 2 * d) + linear(d, d),
        "x_prenet": linear(32, d),
        "prenet": linear(512, d),
        "postnet": linear(d, 32),
        "f5_time_embed": linear(256, d) + linear(d, d),
        "ph_encoder": 302 * d + 3 * (conv(d, d, 5) + 2 * d) + conv(d, d, 1) + 6 * rel_layer + 2 * d,
        "tone_embed": 32 * d,
        "ling_pre_net": 2 * conv(d, d, 4),
    }
    assert counts(dit_tree) == expected
    shapes = {
        "encoder.layers.23.attention.wq.weight": (1024, 1024),
        "encoder.layers.0.feed_forward.w1.weight": (2048, 1024),
        "encoder.layers.0.attention_norm.linear.weight": (6144, 1024),
        "encoder.norm.linear.weight": (2048, 1024),
        "encoder.out_proj.weight": (1024, 1024),
        "ph_encoder.emb.weight": (302, 1024),
        "ph_encoder.pre.conv_layers.2.weight": (1024, 1024, 5),
        "ph_encoder.pre.norm_layers.0.gamma": (1024,),
        "ph_encoder.encoder.attn_layers.5.emb_rel_k": (1, 9, 256),
        "ph_encoder.encoder.ffn_layers.0.conv_1.weight": (2048, 1024, 3),
        "ph_encoder.encoder.last_ln.beta": (1024,),
        "tone_embed.weight": (32, 1024),
        "ling_pre_net.1.weight": (1024, 1024, 4),
        "f5_time_embed.time_mlp.2.weight": (1024, 1024),
        "ctx_mask_proj.weight": (16, 1),
        "local_cond_project.weight": (512, 48),
        "postnet.weight": (32, 1024),
    }
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    # the loader reads the released configuration back off a released file's tensors (its
    # config.yaml holds no sizes), and the model built from the default configuration is this one
    assert DiTConfig.from_dict({}, state) == DiTConfig()
    with torch.device("meta"):
        rebuilt = DiT.from_config(DiTConfig())
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}


def test_wavvae_decoder_tree_matches_upstream(vae_tree):
    state = vae_tree.state_dict()
    assert len(state) == 256
    assert sum(v.numel() for v in state.values()) == 226_081_636
    assert sum(k.endswith(".weight_g") for k in state) == sum(k.endswith(".weight_v") for k in state) == 84

    def upsample(c):  # Upsample(c, r) with r ≤ 5: 7-tap conv branch + transposed conv (kernel 10)
        return wn_conv(c, c // 2, 7) + wn_conv(c // 2, c, 10, g=c) - c + c // 2

    def mrf(c):  # kernel 3, 7, 11 blocks of 3 dilated + 3 plain weight-normed convs
        return sum(6 * wn_conv(c, c, k) for k in (3, 7, 11))

    decoder = wn_conv(160, 2048, 7) + sum(upsample(c) + mrf(c // 2) for c in (2048, 1024, 512, 256))
    decoder += wn_conv(128, 1, 7) + conv(1, 1, 1)
    assert counts(vae_tree) == {
        "proj_to_decoder": linear(32, 320),
        "latent_upsampler": upsample(320),
        "decoder": decoder,
    }
    shapes = {
        "proj_to_decoder.weight": (320, 32),
        "latent_upsampler.upsample.3.weight_v": (160, 320, 7),
        "latent_upsampler.trans_upsample.1.weight_v": (320, 160, 10),
        "latent_upsampler.trans_upsample.1.weight_g": (320, 1, 1),
        "decoder.model_up.1.weight_v": (2048, 160, 7),
        "decoder.model_up.2.trans_upsample.1.weight_v": (2048, 1024, 10),
        "decoder.model_up.3.block3.convs1.2.weight_v": (1024, 1024, 11),
        "decoder.model_up.9.block1.convs2.0.weight_g": (128, 1, 1),
        "decoder.model_up.12.weight_v": (1, 128, 7),
        "decoder.model_up.13.weight": (1, 1, 1),
    }
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert vae_tree.hop_length == 960
    assert WaveVAEConfig.from_dict({"melgan_config": {"use_tanh": False}}, state) == WaveVAEConfig()
    assert WaveVAEConfig.from_dict({}, state) == WaveVAEConfig()  # no tanh: the final 1×1 conv is there
