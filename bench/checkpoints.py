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

# The released BiCodec/config.yaml of Spark-TTS-0.5B (156.3M parameters).
SPARK_BICODEC = {
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
    "decoder": {"input_channel": 1024, "channels": 1536, "rates": [8, 5, 4, 2], "kernel_sizes": [16, 11, 8, 4]},
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


def _quiet_residual_and_suppress(stop_ids: list[int]):
    """Init hook for a full-size LLM that never stops: the tiny model's trick (one hidden dimension
    held at a large constant, the stop rows' weight on it negative) only survives 24 layers if the
    blocks' residual writes stay small, so their output projections are scaled down."""
    from flashtts_spark.tiny_model import _suppress_stops

    suppress = _suppress_stops(stop_ids)

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
    import json

    import torch
    import yaml
    from flashtts_spark.bicodec.model import BiCodec
    from flashtts_spark.bicodec.tiny import PREPROCESSOR_CONFIG, TOP_LEVEL_CONFIG
    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    start = time.perf_counter()
    path = Path(path)
    torch.manual_seed(seed)
    (path / "BiCodec").mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(TOP_LEVEL_CONFIG, sort_keys=False))
    (path / "BiCodec" / "config.yaml").write_text(yaml.safe_dump({"audio_tokenizer": SPARK_BICODEC}, sort_keys=False))
    bicodec = BiCodec.from_config(SPARK_BICODEC)
    state = {k: v.detach().clone().contiguous() for k, v in bicodec.state_dict().items()}
    save_file(state, str(path / "BiCodec" / "model.safetensors"))
    del bicodec, state
    w2v = path / "wav2vec2-large-xlsr-53"
    config = Wav2Vec2Config(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        conv_dim=(512,) * 7,
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
    w2v.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(w2v)
    torch.save(model.state_dict(), w2v / "pytorch_model.bin")
    (w2v / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n")
    del model
    write_spark_llm(path / "LLM", seed=seed)
    logger.info("wrote a full-size random Spark-TTS-0.5B to %s in %.0f s", path, time.perf_counter() - start)
    return path
