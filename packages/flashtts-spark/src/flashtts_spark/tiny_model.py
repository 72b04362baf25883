"""A tiny Spark-TTS model directory in the released layout, for tests and demos (its audio is noise).

BiCodec and wav2vec2 come from :func:`flashtts_spark.bicodec.write_tiny_bicodec`; this module adds
``LLM/``: a tiny Qwen2 with a tokenizer holding every token upstream adds, in upstream's order.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flashtts_core.progress import progress
from flashtts_core.tiny_llm import write_tiny_qwen

from .vocabulary import added_tokens

logger = logging.getLogger("flashtts.spark")


def write_tiny_llm_folder(llm_dir: Path, seed: int = 0) -> None:
    """Write ``llm_dir`` (config.json, model.safetensors, tokenizer files) for a tiny Spark LLM."""
    write_tiny_qwen(
        llm_dir,
        added_tokens(),
        lambda tokenizer: [tokenizer.convert_tokens_to_ids(t) for t in ("<|end_semantic_token|>", "<|im_end|>")],
        max_position_embeddings=8192,
        seed=seed,
    )


def write_tiny_spark(path: Path, seed: int = 0) -> Path:
    """config.yaml, BiCodec/, wav2vec2-large-xlsr-53/ and LLM/ of a tiny Spark-TTS model."""
    from .bicodec import write_tiny_bicodec

    start = time.perf_counter()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with progress(f"tiny Spark-TTS in {path}", 2, logger) as p:
        with p.step("config.yaml, BiCodec/ and wav2vec2-large-xlsr-53/ (random weights)"):
            write_tiny_bicodec(path, seed=seed)
        with p.step("LLM/: a tiny Qwen2 and the Spark-TTS tokenizer"):
            write_tiny_llm_folder(path / "LLM", seed=seed)
    logger.info("wrote a tiny Spark-TTS model to %s in %.1f s", path, time.perf_counter() - start)
    return path
