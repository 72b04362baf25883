from flashtts_core.hookspecs import hookimpl

from .engine import MegaEngine
from .options import MegaOptions


@hookimpl
def register_engines(register):
    register(MegaEngine)


@hookimpl
def register_options(register):
    register(MegaOptions)
