"""A tiny BiCodec written in the released layout goes through the real loader and both directions."""

import time

import numpy as np
import pytest
from flashtts_spark.bicodec import BiCodecTokenizer, write_tiny_bicodec
from flashtts_spark.bicodec.feature import (
    reference_clip,
    volume_normalize,
    wav2vec2_frames,
)


def _expected_semantic_count(num_samples: int) -> int:
    # wav2vec2's unpadded conv stack: (L - 400) // 320 + 1, i.e. 49 for one second, as upstream.
    return wav2vec2_frames(num_samples, [10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("spark")
    start = time.perf_counter()
    write_tiny_bicodec(model_dir)
    assert time.perf_counter() - start < 30
    assert (model_dir / "config.yaml").is_file()
    assert (model_dir / "BiCodec" / "config.yaml").is_file()
    assert (model_dir / "BiCodec" / "model.safetensors").is_file()
    assert (model_dir / "wav2vec2-large-xlsr-53" / "pytorch_model.bin").is_file()
    assert (model_dir / "wav2vec2-large-xlsr-53" / "preprocessor_config.json").is_file()
    total = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert total < 20 * 1024 * 1024
    return BiCodecTokenizer.load(model_dir, device="cpu")


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    t1 = np.arange(16000) / 16000
    t2 = np.arange(40000) / 16000
    a = (0.3 * np.sin(2 * np.pi * 220 * t1) + 0.02 * rng.standard_normal(t1.size)).astype(np.float32)
    b = (0.2 * np.sin(2 * np.pi * 140 * t2) * np.sin(2 * np.pi * 3 * t2) + 0.02 * rng.standard_normal(t2.size)).astype(
        np.float32
    )
    return [a, b]


def test_tokenize_batch(tokenizer, clips):
    out = tokenizer.tokenize(clips)
    assert len(out) == 2
    for (global_tokens, semantic_tokens), clip in zip(out, clips):
        assert global_tokens.shape == (32,)
        assert global_tokens.min() >= 0 and global_tokens.max() < 4096
        assert semantic_tokens.shape == (_expected_semantic_count(len(clip)),)
        assert semantic_tokens.min() >= 0 and semantic_tokens.max() < 8192
    assert out[0][1].shape == (49,) and out[1][1].shape == (124,)


def test_detokenize_batch(tokenizer, clips):
    items = tokenizer.tokenize(clips)
    wavs = tokenizer.detokenize(items)
    for wav, (_, semantic_tokens) in zip(wavs, items):
        assert wav.dtype == np.float32
        assert wav.shape == (320 * len(semantic_tokens),)
        assert np.isfinite(wav).all()
        assert np.abs(wav).max() > 0


def test_batched_equals_one_at_a_time(tokenizer, clips):
    batched = tokenizer.tokenize(clips)
    for (g, s), clip in zip(batched, clips):
        g1, s1 = tokenizer.tokenize([clip])[0]
        np.testing.assert_array_equal(g, g1)
        np.testing.assert_array_equal(s, s1)
    wavs = tokenizer.detokenize(batched)
    for wav, item in zip(wavs, batched):
        np.testing.assert_allclose(wav, tokenizer.detokenize([item])[0], atol=1e-5)


def test_detokenize_mixed_lengths_of_arbitrary_tokens(tokenizer):
    rng = np.random.default_rng(1)
    items = [(rng.integers(0, 4096, 32), rng.integers(0, 8192, n)) for n in (7, 50, 23)]
    wavs = tokenizer.detokenize(items)
    assert [len(w) for w in wavs] == [7 * 320, 50 * 320, 23 * 320]
    for wav, item in zip(wavs, items):
        np.testing.assert_allclose(wav, tokenizer.detokenize([item])[0], atol=1e-5)


def test_reference_clip_and_volume_normalize():
    short = np.arange(1000, dtype=np.float32)
    ref = reference_clip(short, 16000, 6, 320)
    assert ref.shape == (96000,) and ref[1000] == 0 and ref[999] == 999
    odd = reference_clip(np.zeros(200000, dtype=np.float32), 16000, 6.01, 320)
    assert odd.shape == (96000,)
    quiet = np.full(1000, 0.05) * np.sign(np.sin(np.arange(1000)))
    loud = volume_normalize(quiet)
    assert np.abs(loud).max() <= 1.0 and np.abs(loud).max() > 0.05
