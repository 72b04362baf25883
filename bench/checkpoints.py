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


# Orpheus 3B's LLM: Llama-3.2-3B (head_dim 128) with Orpheus' vocabulary of 156,940 ids, tied embeddings.
ORPHEUS_LLM = dict(
    vocab_size=156940, hidden_size=3072, num_layers=28, num_heads=24, num_kv_heads=8, intermediate_size=8192
)
# The slot-cycling structure of the full-size Orpheus (see _orpheus_frames): slot p of a frame lives on
# hidden axis 1 + p (axis 0 is suppress_stops' constant), <start_of_speech> on axis 1 + 7.
ORPHEUS_SLOT_AXIS = 8.0  # an audio embedding's slot axis against random entries of ~0.05 (norm ~2.8)
ORPHEUS_PUSH = 2000.0  # layer 0 MLP's write onto the next slot's axis; the 27 quieted blocks add ~140 (norm)


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
    from flashtts_core.tiny_llm import QWEN_SPECIAL_TOKENS, write_tiny_llm, write_tokenizer
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


def _orpheus_frames(stop_ids: list[int]):
    """Init hook for the full-size Orpheus LLM: it never stops and speaks well-formed 7-id frames, so a
    request makes exactly ``max_tokens // 7`` frames of audio (random ids would be skipped as malformed).

    The tiny model's trick at full width: each audio id of slot p has a large entry on axis 1 + p, and
    the first layer's MLP (8 units; the rest zero) writes a much larger one onto the next slot's axis;
    every other block's residual write is quieted (``_quiet_residual_and_suppress``), so after 28
    layers the next slot's axis still dominates the final hidden state and, with tied embeddings, only
    ids of that slot get high logits. Which code comes inside a slot stays random.
    """
    import torch
    from flashtts_orpheus import frames

    quiet_and_suppress = _quiet_residual_and_suppress(stop_ids)

    def init(model) -> None:
        quiet_and_suppress(model)
        embed = model.model.embed_tokens.weight
        hidden = embed.shape[1]
        for slot in range(frames.SLOTS):
            start = frames.AUDIO_BASE + slot * frames.CODEBOOK_SIZE
            embed[start : start + frames.CODEBOOK_SIZE, 1 + slot] += ORPHEUS_SLOT_AXIS
        embed[frames.START_OF_SPEECH, 1 + frames.SLOTS] += ORPHEUS_SLOT_AXIS
        # After the first RMSNorm an audio embedding's slot axis is about this large:
        norm = (ORPHEUS_SLOT_AXIS**2 + 1 + hidden * 0.05**2) ** 0.5
        axis = ORPHEUS_SLOT_AXIS * hidden**0.5 / norm
        unit_out = torch.nn.functional.silu(torch.tensor(axis)).item() * axis
        mlp = model.model.layers[0].mlp
        for weight in (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight):
            weight.zero_()
        for k in range(frames.SLOTS + 1):  # unit k reads axis 1 + k (slot k, or <start_of_speech> for k = 7)
            following = (k + 1) % frames.SLOTS if k < frames.SLOTS else 0
            mlp.gate_proj.weight[k, 1 + k] = 1.0
            mlp.up_proj.weight[k, 1 + k] = 1.0
            mlp.down_proj.weight[1 + following, k] = ORPHEUS_PUSH / unit_out

    return init


def write_orpheus(path: Path, seed: int = 0) -> Path:
    """A full-size Orpheus 3B folder: the LLM (Llama-3.2-3B shape, Orpheus' vocabulary and tokenizer ids,
    3.3B parameters saved in bfloat16, ~6.6 GB) and ``snac/`` (snac_24khz at its released size, 19.8M).

    Llama 3's rope scaling is left out: it changes no shape and no per-token cost.
    """
    import json

    from flashtts_core.tiny_llm import write_tiny_llm
    from flashtts_orpheus import frames
    from flashtts_orpheus.tiny_model import RELEASED_SNAC_CONFIG, write_snac, write_tokenizer

    start = time.perf_counter()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_snac(path / "snac", seed=seed, config=RELEASED_SNAC_CONFIG)
    write_tiny_llm(
        path,
        architecture="llama",
        eos_token_id=frames.EOT,
        bos_token_id=frames.BEGIN_OF_TEXT,
        tie_word_embeddings=True,
        max_position_embeddings=131072,
        seed=seed,
        init=_orpheus_frames([frames.END_OF_SPEECH, frames.EOT]),
        torch_dtype="bfloat16",
        **ORPHEUS_LLM,
    )
    config = json.loads((path / "config.json").read_text())
    config["pad_token_id"] = frames.PAD
    (path / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(path)
    logger.info("wrote a full-size random Orpheus 3B to %s in %.0f s", path, time.perf_counter() - start)
    return path
