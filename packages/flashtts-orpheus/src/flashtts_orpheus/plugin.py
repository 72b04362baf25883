"""Registers the Orpheus engine and the SNAC codec. Imports nothing heavy: torch, snac and
transformers are imported when a model is loaded."""

from flashtts_core.hookspecs import hookimpl

from .engine import OrpheusEngine
from .options import OrpheusOptions
from .snac_codec import SnacCodec


@hookimpl
def register_engines(register):
    register(OrpheusEngine)


@hookimpl
def register_codecs(register):
    register(SnacCodec)


@hookimpl
def register_options(register):
    register(OrpheusOptions)
