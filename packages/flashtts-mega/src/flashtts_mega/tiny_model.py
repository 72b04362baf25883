"""A tiny randomly initialised MegaTTS3 model directory in the released layout (its audio is noise).

Layout, as the released checkpoint::

    aligner_lm/            config.yaml + model_only_last.ckpt  {"state_dict": {"model": ...}}
    duration_lm/           config.yaml + model_only_last.ckpt  {"state_dict": {"dur_model": ...}}
    diffusion_transformer/ config.yaml + model_only_last.ckpt  {"state_dict": {"dit": ...}}
    wavvae/                config.yaml + decoder.ckpt           {"state_dict": {"model_gen": ...}}
    g2p/                   a Hugging Face Qwen2ForCausalLM + tokenizer with <Reserved_TTS_k> tokens
    example.wav, example.npy   a reference clip (24 kHz) and its latent [1, T, 32], as upstream's assets/

Each neural module writes its own folder (its ``write_tiny``); this module adds ``g2p/`` and the example.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .g2p import MIN_RESERVED_TOKENS, RESERVED_TTS_0
from .phones import G2P_STOP_OFFSET
from .reference import LATENT_CHANNELS, example_latent_frames

logger = logging.getLogger("flashtts.mega")

EXAMPLE_WAV = "example.wav"
EXAMPLE_LATENT = "example.npy"
EXAMPLE_SECONDS = 2.0
SAMPLE_RATE = 24000
RESERVED_TOKENS = 1024
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def write_tiny_g2p(folder: Path, seed: int = 0) -> None:
    """``g2p/``: a tiny Qwen2 whose tokenizer has ``<BOT>``, ``<BOS>`` and ``<Reserved_TTS_0..1023>``."""
    from flashtts_core.tiny_llm import suppress_stops, write_tiny_llm, write_tokenizer
    from transformers import AutoTokenizer

    assert RESERVED_TOKENS >= MIN_RESERVED_TOKENS
    folder = Path(folder)
    extra = ["<BOT>", "<BOS>"] + [f"<Reserved_TTS_{k}>" for k in range(RESERVED_TOKENS)]
    vocab_size = write_tokenizer(
        folder, QWEN_SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_tokens=extra
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    reserved_0 = tokenizer.convert_tokens_to_ids(RESERVED_TTS_0)
    stops = [reserved_0 + G2P_STOP_OFFSET, tokenizer.eos_token_id]
    write_tiny_llm(
        folder,
        architecture="qwen2",
        vocab_size=vocab_size,
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=256,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        seed=seed,
        init=suppress_stops(stops),
    )


def example_wav(seconds: float = EXAMPLE_SECONDS, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test clip: a 140 Hz harmonic series with syllable-rate amplitude changes and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140.0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    wav = 0.2 * voice * envelope + 0.01 * rng.standard_normal(t.size)
    return (0.5 * wav / np.max(np.abs(wav))).astype(np.float32)


def write_example(path: Path, win_size: int, seed: int = 0) -> None:
    """``example.wav`` and ``example.npy``, a latent long enough for the padded clip."""
    import soundfile as sf

    from .aligner import pad_reference

    wav = example_wav(seed=seed)
    sf.write(path / EXAMPLE_WAV, wav, SAMPLE_RATE, subtype="PCM_16")
    frames = example_latent_frames(len(pad_reference(wav, win_size)))
    latent = np.random.default_rng(seed + 1).standard_normal((1, frames, LATENT_CHANNELS)).astype(np.float32)
    np.save(path / EXAMPLE_LATENT, latent, allow_pickle=False)


def write_tiny_mega(path: Path, seed: int = 0) -> Path:
    """Every folder of a tiny MegaTTS3 model, plus the example reference, into ``path``."""
    from .aligner import Aligner
    from .checkpoint import read_config
    from .dit import DiT
    from .duration import DurationModel
    from .wavvae import WaveVAEDecoder

    start = time.perf_counter()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    Aligner.write_tiny(path / "aligner_lm", seed=seed)
    DurationModel.write_tiny(path / "duration_lm", seed=seed)
    DiT.write_tiny(path / "diffusion_transformer", seed=seed)
    WaveVAEDecoder.write_tiny(path / "wavvae", seed=seed)
    write_tiny_g2p(path / "g2p", seed=seed)
    win_size = int(read_config(path / "diffusion_transformer").get("win_size", 960))
    write_example(path, win_size, seed=seed)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    logger.info("tiny MegaTTS3 model written to %s (%.1f MB) in %.1f s", path, size / 1e6, time.perf_counter() - start)
    return path
