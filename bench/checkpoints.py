"""Full-size random checkpoints for the benchmarks, written by project code (no hub access).

Weights are random, so the audio is noise; only shapes (and therefore speed and memory) are real.
The Spark LLM is biased so that it never samples a stop token: every generation runs to
``max_tokens`` and a request makes exactly ``max_tokens / 50`` seconds of audio.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

logger = logging.getLogger("flashtts.bench")

# Spark-TTS-0.5B's LLM (Qwen2.5-0.5B with Spark's extended, padded vocabulary).
SPARK_LLM = dict(
    vocab_size=166000, hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864
)


def _quiet_residual_and_suppress(stop_ids: list[int]):
    """Init hook for a full-size LLM that never stops: the tiny model's trick (one hidden dimension
    held at a large constant, the stop rows' weight on it negative) only survives 24 layers if the
    blocks' residual writes stay small, so their output projections are scaled down."""
    from flashtts_core.tiny_llm import suppress_stops

    suppress = suppress_stops(stop_ids)

    def init(model) -> None:
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(0.02)
            layer.mlp.down_proj.weight.mul_(0.02)
        suppress(model)

    return init


def write_spark_llm(llm_dir: Path, seed: int = 0) -> Path:
    """Spark-TTS-0.5B's LLM/ folder (config, bf16-sized random weights saved in float32, tokenizer)."""
    from flashtts_core.tiny_llm import write_tiny_llm, write_tokenizer
    from flashtts_spark.tiny_model import QWEN_SPECIAL_TOKENS
    from flashtts_spark.vocabulary import added_tokens
    from transformers import AutoTokenizer

    llm_dir = Path(llm_dir)
    write_tokenizer(
        llm_dir, QWEN_SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_tokens=added_tokens()
    )
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|end_semantic_token|>", "<|im_end|>")]
    write_tiny_llm(
        llm_dir,
        architecture="qwen2",
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        max_position_embeddings=32768,
        seed=seed,
        init=_quiet_residual_and_suppress(stops),
        **SPARK_LLM,
    )
    return llm_dir


def write_spark(path: Path, seed: int = 0) -> Path:
    """A full-size Spark-TTS-0.5B directory: LLM/ (0.5B), BiCodec/ (156M, released config) and
    wav2vec2-large-xlsr-53/ (XLSR-53's shape, 24 layers of 1024)."""
    import torch
    from flashtts_spark.bicodec.codec_api import WAV2VEC2_DIR
    from flashtts_spark.bicodec.tiny import RELEASED_BICODEC_CONFIG, write_bicodec, write_wav2vec2

    start = time.perf_counter()
    path = Path(path)
    torch.manual_seed(seed)
    write_bicodec(path, RELEASED_BICODEC_CONFIG)
    write_wav2vec2(
        path / WAV2VEC2_DIR,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        conv_channels=512,
    )
    write_spark_llm(path / "LLM", seed=seed)
    logger.info("wrote a full-size random Spark-TTS-0.5B to %s in %.0f s", path, time.perf_counter() - start)
    return path
