"""Spark-TTS's own options (registered in plugin.py): server flags only, no request fields."""

from __future__ import annotations

from typing import Literal

from flashtts_core.options import AttnImpl, PluginOptions, option

# Precisions BiCodec's decoder runs in; a new one is a value here and a case in BiCodecCodec.set_decoder_dtype.
DetokenizerDtype = Literal["float32", "bfloat16"]
# How BiCodec's wave generator is laid out for decoding: see flashtts_spark.bicodec.packed.
BiCodecDecoder = Literal["auto", "packed", "plain"]


class SparkOptions(PluginOptions):
    """Options of the spark engine (``--fix_voice``, ``--wav2vec_attn_implementation``, ``--detokenizer_dtype``, ``--bicodec_decoder``)."""

    owner = "spark"

    wav2vec_attn_implementation: AttnImpl = option("eager", help="wav2vec2 attention in Spark-TTS.")
    detokenizer_dtype: DetokenizerDtype = option(
        "float32",
        help="Precision of Spark-TTS's BiCodec decoder; bfloat16 is faster on CPUs with AMX and "
        "differs from float32 by up to ~3e-2 of the peak.",
    )
    bicodec_decoder: BiCodecDecoder = option(
        "auto",
        help="Layout of BiCodec's decoder: packed (channels-last convolutions, polyphase upsampling; "
        "the same float32 arithmetic within ~3e-6 of the peak, 1.1x faster in float32 and 1.9x in "
        "bfloat16 on a 2-core AMX CPU), plain (the module as loaded), auto "
        "(packed on a CPU).",
    )
    fix_voice: bool = option(False, help="Keep Spark-TTS's built-in female/male timbres fixed.")
