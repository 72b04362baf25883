"""Registers the tone engine and the markov backend with FlashTTS."""

from flashtts_core import hookimpl

from .markov_backend import MarkovBackend
from .options import ToneOptions
from .tone_engine import ToneEngine


@hookimpl
def register_engines(register):
    register(ToneEngine)


@hookimpl
def register_backends(register):
    register(MarkovBackend)


@hookimpl
def register_options(register):
    register(ToneOptions)


@hookimpl
def register_commands(register):
    register("tone voices", _configure_voices, help="list the tone engine's voices")


def _configure_voices(parser):
    parser.add_argument("--only", help="print only this voice (an error if there is none)")

    def run(args) -> int:
        from flashtts_core.commands import CommandError

        if args.only is not None and args.only not in ToneEngine.voices:
            raise CommandError(f"no tone voice {args.only!r}; voices: {', '.join(ToneEngine.voices)}")
        for voice in [args.only] if args.only else ToneEngine.voices:
            print(voice)
        return 0

    return run
