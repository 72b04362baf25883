"""Spark-TTS's own options (registered in plugin.py): server flags only, no request fields."""

from __future__ import annotations

from typing import Literal

from flashtts_core.options import AttnImpl, PluginOptions, option

# Precisions BiCodec's decoder runs in; a new one is a value here and a case in BiCodecCodec.set_decoder_dtype.
DetokenizerDtype = Literal["float32", "bfloat16"]


class SparkOptions(PluginOptions):
    """Options of the spark engine (``--fix_voice``, ``--wav2vec_attn_implementation``, ``--detokenizer_dtype``)."""

    owner = "spark"

    wav2vec_attn_implementation: AttnImpl = option("eager", help="wav2vec2 attention in Spark-TTS.")
    detokenizer_dtype: DetokenizerDtype = option(
        "float32",
        help="Precision of Spark-TTS's BiCodec decoder; bfloat16 is faster on CPUs with AMX and "
        "differs from float32 by up to ~3e-2 of the peak.",
    )
    fix_voice: bool = option(False, help="Keep Spark-TTS's built-in female/male timbres fixed.")
