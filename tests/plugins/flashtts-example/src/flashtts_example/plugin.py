"""Registers the tone engine and the markov backend with FlashTTS."""

from flashtts_core import hookimpl

from .markov_backend import MarkovBackend
from .tone_engine import ToneEngine


@hookimpl
def register_engines(register):
    register(ToneEngine)


@hookimpl
def register_backends(register):
    register(MarkovBackend)
