"""BiCodec decoding in bfloat16 (--detokenizer_dtype bfloat16) stays close to the float32 decode."""

from __future__ import annotations

import numpy as np


def test_bfloat16_decode_is_close_to_float32(tiny_spark):
    from flashtts_spark.codec import BiCodecCodec

    codec = BiCodecCodec.load(tiny_spark, "cpu", encoder=False)
    rng = np.random.default_rng(0)
    items = [(rng.integers(0, 4096, 32), rng.integers(0, 8192, n)) for n in (60, 37)]
    reference = codec.decode(items)
    codec.set_decoder_dtype("bfloat16")
    assert codec.decoder_dtype == "bfloat16"
    fast = codec.decode(items)
    for ref, out, (_, semantic) in zip(reference, fast, items):
        assert out.dtype == np.float32 and out.shape == ref.shape == (len(semantic) * codec.hop_length,)
        peak = float(np.abs(ref).max())
        # Measured on the full-size BiCodec: ~3e-2 of the peak at most (hence opt-in).
        assert float(np.abs(out - ref).max()) < 0.1 * peak
