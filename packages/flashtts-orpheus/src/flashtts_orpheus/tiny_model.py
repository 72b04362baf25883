"""A tiny randomly initialised Orpheus model in the released layout, for tests and demos.

Layout (as canopylabs/orpheus-3b-0.1-ft + snac_24khz): the model folder is a Hugging Face
``LlamaForCausalLM`` (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) with the
released vocabulary of 156,940 ids and tied embeddings, plus ``snac/`` (config.json,
pytorch_model.bin) built by ``snac.SNAC`` itself.

The weights are random except for a small piece of structure so that the tiny LLM speaks in
well-formed frames: every audio id of slot ``p`` has an embedding along one axis ``p`` of the hidden
space, and the first layer's MLP moves that axis onto axis ``p + 1`` (mod 7), so with tied embeddings
the next id's slot follows the current one's; ``<start_of_speech>`` leads to slot 0. The stop id gets
no such push, so it is practically never sampled and the length is ``max_tokens // 7`` frames. Which
code comes inside a slot stays random: the audio is noise.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from flashtts_core.progress import progress

from . import frames

logger = logging.getLogger("flashtts.orpheus")

HIDDEN = 128
HEADS = 4
KV_HEADS = 2
LAYERS = 2
INTERMEDIATE = 256
SLOT_AXIS_SCALE = 4.0  # size of an audio embedding's slot axis against random entries of ~0.05
SLOT_PUSH = 10.0  # how much larger the next slot's axis is than the current one after the first MLP
SPEECH_AXIS = frames.SLOTS  # the axis of <start_of_speech>, which leads to slot 0

# hubertsiuzdak/snac_24khz's config.json, the codec Orpheus speaks (19.8M parameters): the benchmarks
# write it at this size with random weights.
RELEASED_SNAC_CONFIG = {
    "sampling_rate": 24000,
    "encoder_dim": 48,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 1024,
    "decoder_rates": [8, 8, 4, 2],
    "attn_window_size": None,
    "codebook_size": frames.CODEBOOK_SIZE,
    "codebook_dim": 8,
    "vq_strides": [4, 2, 1],
    "noise": True,
    "depthwise": True,
}

# The same layout, narrow: the tests' codec.
SNAC_TINY_CONFIG = {**RELEASED_SNAC_CONFIG, "encoder_dim": 8, "latent_dim": None, "decoder_dim": 32}


def llama3_special_tokens() -> list[str]:
    """Llama 3's 256 reserved ids 128000..128255, in order."""
    named = {
        0: "<|begin_of_text|>",
        1: "<|end_of_text|>",
        4: "<|finetune_right_pad_id|>",
        6: "<|start_header_id|>",
        7: "<|end_header_id|>",
        8: "<|eom_id|>",
        9: "<|eot_id|>",
        10: "<|python_tag|>",
    }
    tokens, reserved = [], 0
    for i in range(256):
        if i in named:
            tokens.append(named[i])
        else:
            tokens.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return tokens


def write_tokenizer(path: Path) -> int:
    """A byte-level BPE tokenizer whose ids from 128000 up match the released Orpheus tokenizer.

    The base vocabulary is 256 byte symbols plus unreachable fillers up to id 127999 (Llama 3's BPE
    vocabulary size), then Llama 3's special tokens and ``<custom_token_0..28683>`` as added tokens.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    for i in range(len(vocab), frames.BEGIN_OF_TEXT):
        vocab[f"<|filler_{i}|>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = llama3_special_tokens()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    custom_count = frames.VOCAB_SIZE - frames.CUSTOM_TOKEN_BASE
    tok.add_tokens([AddedToken(f"<custom_token_{n}>", special=False, normalized=False) for n in range(custom_count)])
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", frames.BEGIN_OF_TEXT)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        model_max_length=131072,
    )
    checks = {
        "<|begin_of_text|>": frames.BEGIN_OF_TEXT,
        "<|eot_id|>": frames.EOT,
        "<custom_token_0>": frames.CUSTOM_TOKEN_BASE,
        "<custom_token_10>": frames.AUDIO_BASE,
        f"<custom_token_{custom_count - 1}>": frames.VOCAB_SIZE - 1,
    }
    for token, expected in checks.items():
        got = fast.convert_tokens_to_ids(token)
        if got != expected:
            raise RuntimeError(f"tiny tokenizer: {token} has id {got}, expected {expected}")
    fast.save_pretrained(str(path))
    return len(fast)


def _shape_llm(model) -> None:
    """Give the random tiny Llama its slot-cycling structure (see the module docstring)."""
    import torch

    embed = model.model.embed_tokens.weight  # tied with lm_head
    for slot in range(frames.SLOTS):
        start = frames.AUDIO_BASE + slot * frames.CODEBOOK_SIZE
        embed[start : start + frames.CODEBOOK_SIZE, slot] += SLOT_AXIS_SCALE
    embed[frames.START_OF_SPEECH, SPEECH_AXIS] += SLOT_AXIS_SCALE
    embed[frames.END_OF_SPEECH].zero_()

    # Make the first layer's MLP a permutation of axes 0..7: unit k reads axis k and writes axis next(k).
    mlp = model.model.layers[0].mlp
    mlp.gate_proj.weight.zero_()
    mlp.up_proj.weight.zero_()
    mlp.down_proj.weight.zero_()
    # After the input RMSNorm an axis of size SLOT_AXIS_SCALE is about sqrt(HIDDEN) (the rest is small).
    axis = HIDDEN**0.5
    unit_out = torch.nn.functional.silu(torch.tensor(axis)).item() * axis
    for k in range(frames.SLOTS + 1):
        following = (k + 1) % frames.SLOTS if k < frames.SLOTS else 0
        mlp.gate_proj.weight[k, k] = 1.0
        mlp.up_proj.weight[k, k] = 1.0
        mlp.down_proj.weight[following, k] = SLOT_PUSH * SLOT_AXIS_SCALE / unit_out
    # Quiet attention: it still mixes context, but cannot overturn the slot axis.
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight.mul_(0.2)


def write_llm(path: Path) -> None:
    from flashtts_core.tiny_llm import write_tiny_llm

    write_tiny_llm(
        path,
        architecture="llama",
        vocab_size=frames.VOCAB_SIZE,
        hidden_size=HIDDEN,
        num_layers=LAYERS,
        num_heads=HEADS,
        num_kv_heads=KV_HEADS,
        intermediate_size=INTERMEDIATE,
        eos_token_id=frames.EOT,
        bos_token_id=frames.BEGIN_OF_TEXT,
        tie_word_embeddings=True,
        init=_shape_llm,
    )
    config_path = path / "config.json"
    config = json.loads(config_path.read_text())
    config["pad_token_id"] = frames.PAD
    config_path.write_text(json.dumps(config, indent=2))


def write_snac(path: Path, seed: int = 0, config: dict = SNAC_TINY_CONFIG) -> None:
    """A random ``snac.SNAC`` in its release layout: tiny by default (the 24 kHz model's rates, codebooks
    and strides), or ``RELEASED_SNAC_CONFIG`` for the released size."""
    import torch
    from snac import SNAC

    torch.manual_seed(seed)
    model = SNAC(**config)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(model.state_dict(), path / "pytorch_model.bin")


def write_tiny_model(path: Path) -> None:
    """Write the tiny LLM + tokenizer into ``path`` and a tiny SNAC into ``path/snac``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with progress(f"tiny Orpheus in {path}", 3, logger) as p:
        with p.step("a tiny Llama LLM (config.json, model.safetensors)"):
            write_llm(path)
        with p.step("the Orpheus tokenizer"):
            write_tokenizer(path)
        with p.step("snac/: a tiny 24 kHz SNAC codec"):
            write_snac(path / "snac")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    logger.info("tiny Orpheus model written to %s (%.0f MB) in %.1f s", path, size / 1e6, time.perf_counter() - start)
