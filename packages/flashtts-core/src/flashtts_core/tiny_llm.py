"""Tiny randomly initialised causal LMs and tokenizers in the Hugging Face layout, for tests, demos
and plugin authors. Their output is noise; only their shapes and files are real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

# Qwen2.5's own special tokens that the Qwen-based TTS models rely on (EOS is <|im_end|>).
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def write_tokenizer(
    path: Path,
    special_tokens: Iterable[str],
    *,
    eos_token: str,
    bos_token: Optional[str] = None,
    pad_token: Optional[str] = None,
    extra_tokens: Iterable[str] = (),
    model_max_length: int = 32768,
) -> int:
    """A byte-level BPE tokenizer (256 byte symbols, no merges) with added tokens; returns its size.

    ``special_tokens`` are added as special (never split, skipped on decode); ``extra_tokens`` as
    ordinary added tokens (never split, kept on decode), the way upstream TTS tokenizers add theirs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        bos_token=bos_token,
        pad_token=pad_token or eos_token,
        model_max_length=model_max_length,
    )
    specials = [t for t in special_tokens if t not in fast.get_vocab()]
    fast.add_special_tokens({"additional_special_tokens": specials})
    extras = [t for t in extra_tokens if t not in fast.get_vocab()]
    if extras:
        fast.add_tokens(extras)
    fast.save_pretrained(str(path))
    return len(fast)


# Hidden-state dimension that suppress_stops keeps constant.
_BIAS_DIM = 0


def suppress_stops(stop_ids: list[int]):
    """An init hook for ``write_tiny_llm`` that makes the stop tokens practically unreachable, so that a
    generation always runs to its token budget and the output length is predictable.

    Qwen2's output head has no bias and its embeddings are tied, so the hook makes one hidden
    dimension a large constant instead: every input embedding gets +1 there, which after the final
    RMSNorm dominates the hidden state; every output row's weight on it is then +1 (a constant shift
    of all logits, which sampling ignores) except the stop rows, which get -1.
    """

    def init(model) -> None:
        embeddings = model.get_input_embeddings().weight
        embeddings[:, _BIAS_DIM] = 1.0
        for token_id in stop_ids:
            embeddings[token_id].zero_()
            embeddings[token_id, _BIAS_DIM] = -1.0

    return init


def write_tiny_llm(
    path: Path,
    *,
    architecture: str = "qwen2",
    vocab_size: int,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 256,
    eos_token_id: int | list[int] = 0,
    bos_token_id: Optional[int] = None,
    tie_word_embeddings: bool = True,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    init=None,
    torch_dtype: str = "float32",
) -> None:
    """Write a tiny Qwen2 or Llama ``*ForCausalLM`` (config.json + model.safetensors) into ``path``.

    ``init(model)`` may reshape weights after random initialisation (e.g. bias the output head so the
    tiny model emits a well-formed sequence). head_dim = hidden_size / num_heads must be one vLLM's
    CPU attention supports (32, 64, 80, 96, 112, 128 …): keep hidden 128 with 4 heads.
    ``torch_dtype`` ("float32" or "bfloat16") is the dtype the weights are built and saved in: a
    full-size 3B model built in bfloat16 never needs its float32 copy in memory.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        tie_word_embeddings=tie_word_embeddings,
        torch_dtype=torch_dtype,
    )
    config: Any
    model_class: Any
    if architecture == "qwen2":
        config, model_class = Qwen2Config(**{**common, "rope_theta": 1000000.0}), Qwen2ForCausalLM
    elif architecture == "llama":
        config = LlamaConfig(**{**common, "rope_theta": 500000.0, "head_dim": hidden_size // num_heads})
        model_class = LlamaForCausalLM
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, torch_dtype))
    try:
        model = model_class(config)
    finally:
        torch.set_default_dtype(default_dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.05)
        if init is not None:
            init(model)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    cfg = json.loads((path / "config.json").read_text())
    cfg["torch_dtype"] = torch_dtype
    (path / "config.json").write_text(json.dumps(cfg, indent=2))


def write_tiny_qwen(
    path: Path,
    extra_tokens: Iterable[str],
    stops: Callable[[Any], list[int]],
    *,
    max_position_embeddings: int,
    seed: int = 0,
) -> None:
    """A tiny Qwen2 LM folder (hidden 128, 2 layers) with Qwen2.5's tokenizer plus ``extra_tokens``;
    ``stops(tokenizer)`` gives the stop token ids that :func:`suppress_stops` makes unreachable."""
    from transformers import AutoTokenizer

    path = Path(path)
    vocab_size = write_tokenizer(
        path, QWEN_SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_tokens=extra_tokens
    )
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    write_tiny_llm(
        path,
        architecture="qwen2",
        vocab_size=vocab_size,
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=256,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        max_position_embeddings=max_position_embeddings,
        seed=seed,
        init=suppress_stops(stops(tokenizer)),
    )
