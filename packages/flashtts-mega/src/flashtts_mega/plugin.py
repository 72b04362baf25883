from flashtts_core.hookspecs import hookimpl

from .engine import MegaEngine


@hookimpl
def register_engines(register):
    register(MegaEngine)
