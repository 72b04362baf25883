"""BiCodec's packed decoder (--bicodec_decoder packed, the CPU default) computes the float32 decode.

Packing only reorders the sums (channels-last convolutions, the upsampling as polyphase
convolutions), so the packed decode must equal the plain one to float32 rounding: 1e-5 of the
peak, where bfloat16 is ~1e-2 off. Measured on the full-size decoder in bench/codec.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flashtts_core.options import EngineOptions
from flashtts_core.request import SynthesisRequest
from flashtts_core.sampling import SamplingOverrides


def _items(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 4096, 32), rng.integers(0, 8192, n)) for n in (60, 37, 1)]


def test_packed_decode_equals_plain_float32(tiny_spark):
    from flashtts_spark.bicodec.packed import PackedWaveGenerator
    from flashtts_spark.codec import BiCodecCodec

    codec = BiCodecCodec.load(tiny_spark, "cpu", encoder=False)
    items = _items()
    plain = codec.decode(items)  # one padded batch: the mask path
    plain_alone = [codec.decode([item])[0] for item in items]
    codec.pack_decoder()
    assert isinstance(codec._tokenizer.model.decoder, PackedWaveGenerator)
    codec.pack_decoder()  # a second call keeps the packed decoder
    packed = codec.decode(items)
    packed_alone = [codec.decode([item])[0] for item in items]
    for ref, ref_alone, out, out_alone, (_, semantic) in zip(plain, plain_alone, packed, packed_alone, items):
        assert out.dtype == np.float32 and out.shape == ref.shape == (len(semantic) * codec.hop_length,)
        peak = float(np.abs(ref).max())
        assert float(np.abs(out - ref).max()) <= 1e-5 * peak
        assert float(np.abs(out_alone - ref_alone).max()) <= 1e-5 * peak
        assert float(np.abs(out - out_alone).max()) <= 1e-5 * peak  # batched = alone, as plain


def test_packed_bfloat16_stays_within_the_bfloat16_bound(tiny_spark):
    from flashtts_spark.codec import BiCodecCodec

    codec = BiCodecCodec.load(tiny_spark, "cpu", encoder=False)
    items = _items(1)
    reference = codec.decode(items)
    codec.pack_decoder()
    codec.set_decoder_dtype("bfloat16")
    assert next(codec._tokenizer.model.decoder.parameters()).dtype == torch.bfloat16
    for ref, out in zip(reference, codec.decode(items)):
        assert out.dtype == np.float32 and out.shape == ref.shape
        assert float(np.abs(out - ref).max()) < 0.1 * float(np.abs(ref).max())


@pytest.mark.parametrize("choice,packed", [("auto", True), ("packed", True), ("plain", False)])
@pytest.mark.asyncio
async def test_engine_option_picks_the_decoder(tiny_spark, tmp_path, choice, packed):
    from flashtts_server.runtime import TTSRuntime
    from flashtts_spark.bicodec.packed import PackedWaveGenerator

    options = EngineOptions(model_path=tiny_spark, backend="torch", role_dir=tmp_path, bicodec_decoder=choice)
    rt = await TTSRuntime.load(options)
    try:
        decoder = rt.engine.detokenizer_codec._tokenizer.model.decoder
        assert isinstance(decoder, PackedWaveGenerator) is packed
        request = SynthesisRequest(
            text="Hello there.", voice="female", sampling=SamplingOverrides(max_tokens=10, seed=1)
        )
        audio = await rt.render(rt.synthesize(request))
        assert audio.dtype == np.float32 and audio.size > 0 and np.isfinite(audio).all()
    finally:
        await rt.close()
