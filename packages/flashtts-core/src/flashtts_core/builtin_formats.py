"""Core's own plugin: the six output formats (mp3, opus, aac, flac, wav, pcm)."""

from .formats import BUILTIN_FORMATS
from .hookspecs import hookimpl


@hookimpl
def register_formats(register):
    for name, encoder in BUILTIN_FORMATS.items():
        register(name, encoder)
