"""The flashtts entry point of flashtts-spark: registers the Spark-TTS engine and the BiCodec codec.

Nothing heavy is imported here: torch and transformers load when a model does.
"""

from __future__ import annotations

from flashtts_core.hookspecs import hookimpl

from .codec import BiCodecCodec
from .engine import SparkEngine
from .options import SparkOptions


@hookimpl
def register_engines(register):
    register(SparkEngine)


@hookimpl
def register_codecs(register):
    register(BiCodecCodec)


@hookimpl
def register_options(register):
    register(SparkOptions)
