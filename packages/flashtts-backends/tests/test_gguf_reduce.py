"""The reduced-vocabulary GGUF: its rows are the full file's bytes, its tokenizer cut to match, and the
embedding rows read back are what the model was converted from."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_cpp")


def test_reduced_file_holds_the_kept_rows_and_tokens(tiny_llm_dir, tiny_gguf, tmp_path):
    from flashtts_backends.gguf_reduce import EmbeddingRows, read_gguf, write_reduced
    from safetensors.numpy import load_file

    full = read_gguf(tiny_gguf)
    eos = full.value("tokenizer.ggml.eos_token_id")
    kept = sorted({3, 40, eos, 300, 301, 510, 511})
    out = write_reduced(tiny_gguf, kept, tmp_path / "cut.gguf")
    cut = read_gguf(out)
    tokens = full.value("tokenizer.ggml.tokens")
    assert cut.value("tokenizer.ggml.tokens") == [tokens[i] for i in kept]
    assert len(cut.value("tokenizer.ggml.token_type")) == len(kept)
    assert cut.tensor("token_embd.weight").shape == [full.tensor("token_embd.weight").shape[0], len(kept)]
    assert cut.value("tokenizer.ggml.eos_token_id") == kept.index(eos)
    # A special token that is not kept is dropped, not left pointing at another row.
    for key in (k for k in full.fields if k.startswith("tokenizer.ggml.") and k.endswith("_token_id")):
        assert (key in cut.fields) == (full.value(key) in kept)
    assert [t.name for t in cut.tensors] == [t.name for t in full.tensors]

    weights = load_file(str(tiny_llm_dir / "model.safetensors"))
    embed = weights["model.embed_tokens.weight"].astype(np.float32)
    rows = EmbeddingRows(tiny_gguf)
    np.testing.assert_array_equal(rows([5, 300, 5]), embed[[5, 300, 5]])
    reduced_rows = EmbeddingRows(out)
    np.testing.assert_array_equal(reduced_rows(range(len(kept))), embed[kept])
    rows.close()
    reduced_rows.close()


def test_q8_0_rows_are_ggml_dequantized(tiny_llm_dir, tmp_path):
    from flashtts_backends.gguf_convert import convert_to_gguf
    from flashtts_backends.gguf_reduce import EmbeddingRows
    from safetensors.numpy import load_file

    gguf = convert_to_gguf(tiny_llm_dir, outtype="q8_0", outfile=tmp_path / "tiny-q8_0.gguf")
    embed = load_file(str(tiny_llm_dir / "model.safetensors"))["model.embed_tokens.weight"].astype(np.float32)
    rows = EmbeddingRows(gguf)
    got = rows([1, 100, 511])
    rows.close()
    # q8_0: one float16 scale per 32 values, 8-bit steps: within half a step (peak / 127) plus the
    # scale's own rounding (2^-11 of up to 127 steps).
    blocks = np.abs(embed[[1, 100, 511]]).reshape(3, -1, 32).max(-1, keepdims=True) / 127
    assert np.all(np.abs(got - embed[[1, 100, 511]]).reshape(3, -1, 32) <= blocks * 0.6 + 1e-6)
    assert not np.array_equal(got, embed[[1, 100, 511]])


def test_bad_kept_ids_are_refused(tiny_gguf, tmp_path):
    from flashtts_backends.gguf_reduce import GGUFError, read_gguf, write_reduced

    for kept in ([], [5, 3], [1, 1], [0, 512]):
        with pytest.raises(ValueError):
            write_reduced(tiny_gguf, kept, tmp_path / "bad.gguf")
    (tmp_path / "not.gguf").write_bytes(b"GGML" + bytes(40))
    with pytest.raises(GGUFError):
        read_gguf(tmp_path / "not.gguf")
