"""The ``flashtts`` command: serve, infer, plugins, tiny-model, and the commands plugins add
through the ``register_commands`` hook (``convert gguf`` comes from flashtts-backends)."""

from __future__ import annotations

import argparse
import enum
import functools
import json
import logging
import sys
import typing
from pathlib import Path
from typing import Any, Optional, Sequence

# Fields of /clone_voice's form that `flashtts infer` does not take as flags: the text is -i, the
# reference a file (--reference_audio), the output a file whose extension is its format; the request's
# seed is the engine's --seed.
NOT_INFER_FLAGS = ("text", "reference_audio", "stream", "response_format", "sample_rate", "seed")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _field_kind(annotation: Any) -> tuple[type, Optional[tuple]]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _field_kind(args[0])
    if origin is typing.Literal:
        return str, typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return str, tuple(member.value for member in annotation)
    return annotation, None


def add_settings_arguments(parser: argparse.ArgumentParser, model_cls, exclude: Sequence[str] = ()) -> None:
    """One ``--NAME`` flag per settings field, named exactly like the field."""
    group = parser.add_argument_group("model and server options (also FLASHTTS_<NAME> environment variables)")
    for name, field in model_cls.model_fields.items():
        if name not in exclude:
            _add_flag(group, name, field.annotation, f"{field.description or ''} (default: {field.default})")


def _add_flag(group, name: str, annotation: Any, help_text: str) -> None:
    """``--NAME``: on/off for a bool, the values of a Literal as choices, else one value (None: unset)."""
    kind, choices = _field_kind(annotation)
    if kind is bool:
        group.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help_text)
    else:
        group.add_argument(
            f"--{name}", default=None, choices=choices, metavar=name.upper() if not choices else None, help=help_text
        )


def add_request_arguments(parser: argparse.ArgumentParser, model_cls, exclude: Sequence[str]) -> None:
    """One ``--NAME`` flag per field of a request model (``flashtts infer``: /clone_voice's form, the
    plugins' request fields included), named and described as the API's field."""
    group = parser.add_argument_group("synthesis fields (as in /speak and /clone_voice; default: the engine's)")
    for name, field in model_cls.model_fields.items():
        if name not in exclude:
            _add_flag(group, name, field.annotation, field.description or "")


def _settings_from_args(model_cls, args: argparse.Namespace):
    from pydantic import ValidationError

    values = {name: getattr(args, name) for name in model_cls.model_fields if getattr(args, name, None) is not None}
    try:
        return model_cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ()))
        raise CLIError(f"--{field}: {err.get('msg')} (got {err.get('input')!r})") from None


def _setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- commands --------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from .logging_setup import configure_logging
    from .runner import serve
    from .settings import settings_model

    settings = _settings_from_args(settings_model(), args)
    configure_logging(settings.log_level, settings.log_format)
    if settings.model_path is None:
        raise CLIError("--model_path is required (try `flashtts tiny-model spark demo-model` for a demo model)")
    if not settings.backend:
        raise _backend_required()
    _check_model_and_backend(settings)
    from . import ray_serve  # imports Ray only inside serve_replicas

    if ray_serve.scale_out_requested(settings):
        if settings.wyoming_port is not None:
            raise CLIError("--wyoming_port serves from one process: it does not work with --replicas (run one per pod)")
        try:
            return ray_serve.serve_replicas(settings)
        except ray_serve.ScaleOutError as exc:
            raise CLIError(str(exc)) from None
    # The port opens at once, the model loads behind it; SIGTERM/SIGINT drain before closing (runner.py, lifecycle.py).
    return serve(settings)


def _backend_required() -> CLIError:
    """--backend is missing: name the installed backends (the plugins', not a list of ours)."""
    from flashtts_core.plugins import get_plugin_manager

    names = list(get_plugin_manager().backends)
    listed = " or ".join(filter(None, [", ".join(names[:-1]), *names[-1:]])) or "none is installed"
    return CLIError(f"--backend is required: {listed}")


def _check_model_and_backend(options) -> None:
    """Fail before starting anything when the model folder or backend is wrong."""
    from flashtts_core.errors import FlashTTSError
    from flashtts_core.plugins import get_plugin_manager

    pm = get_plugin_manager()
    try:
        engine = pm.detect_engine(options.model_path)
        pm.check_options(options, engine.name, options.backend)
    except FlashTTSError as exc:
        raise CLIError(exc.message) from None


def cmd_plugins(args: argparse.Namespace) -> int:
    from flashtts_core.plugins import get_plugin_manager

    pm = get_plugin_manager()
    if args.json:
        print(json.dumps([p.as_dict() for p in pm.plugins], indent=2))
        return 0
    status = pm.backend_status()
    for p in pm.plugins:
        where = f"{p.distribution} {p.version}" if p.distribution else p.module
        print(f"{p.name} ({where})")
        if p.error:
            print(f"  FAILED: {p.error}")
        for kind in ("engines", "backends", "codecs", "formats", "options", "commands"):
            names = getattr(p, kind)
            if not names:
                continue
            if kind == "backends":
                shown = [n if status.get(n) is None else f"{n} (unavailable)" for n in names]
            elif kind == "options":  # owner: its fields
                shown = [f"{n} ({', '.join(pm.options[n].model_fields)})" for n in names if n in pm.options]
            else:
                shown = names
            print(f"  {kind}: {', '.join(shown)}")
    unavailable = {n: why for n, why in status.items() if why}
    if unavailable:
        print("\nunavailable backends:")
        for name, why in unavailable.items():
            print(f"  {name}: {why}")
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from flashtts_core.plugins import get_plugin_manager

    _setup_logging("info")
    pm = get_plugin_manager()
    engine = pm.engines.get(args.engine)
    if engine is None:
        raise CLIError(f"unknown engine {args.engine!r}; installed engines: {', '.join(sorted(pm.engines)) or 'none'}")
    path = Path(args.dir)
    if path.exists() and any(path.iterdir()) and not args.force:
        raise CLIError(f"{path} is not empty (use --force to write into it)")
    try:
        engine.write_tiny_model(path)
    except NotImplementedError as exc:
        raise CLIError(str(exc)) from None
    print(f"wrote a tiny {args.engine} model to {path}: random weights in the upstream layout, its audio is noise")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    import asyncio

    from flashtts_core.errors import FlashTTSError

    options = _settings_from_args(infer_options_model(), args)
    _setup_logging(args.log_level)
    if options.model_path is None:
        raise CLIError("--model_path is required")
    if not options.backend:
        raise _backend_required()
    text = args.input
    if text.endswith(".txt") and Path(text).is_file():
        text = Path(text).read_text(encoding="utf-8")
    output = Path(args.output)
    fmt = output.suffix.lstrip(".").lower()
    fields = _request_from_args(args, text)
    try:
        asyncio.run(_infer(options, args, fields, output, fmt))
    except FlashTTSError as exc:
        raise CLIError(exc.message) from None
    from .runner import exit_now

    exit_now(0)  # the file is written and the engine closed


@functools.lru_cache(maxsize=1)
def infer_options_model():
    """EngineOptions with the server flags of the installed plugins (``--fix_voice``, ``--snac_path`` …)."""
    from flashtts_core.options import EngineOptions, declared_options, field_definitions
    from flashtts_core.plugins import get_plugin_manager
    from pydantic import create_model

    from .settings import plugin_described_fields

    plugins = get_plugin_manager()
    declared = declared_options(plugins.options.values(), "server", taken=EngineOptions.model_fields)
    fields = {**field_definitions(declared), **plugin_described_fields(EngineOptions, plugins)}
    return create_model("EngineOptions", __base__=EngineOptions, **fields)


@functools.lru_cache(maxsize=1)
def infer_request_model():
    """/clone_voice's form model with the installed plugins' request fields: ``flashtts infer``'s
    synthesis flags and their validation."""
    from .plugin_options import request_models

    return request_models().clone


def _infer_request_flags() -> list[str]:
    taken = {*NOT_INFER_FLAGS, *infer_options_model().model_fields}
    return [name for name in infer_request_model().model_fields if name not in taken]


def _request_from_args(args: argparse.Namespace, text: str):
    """The synthesis fields of the command line, validated as the API validates them."""
    from pydantic import ValidationError

    values = {name: getattr(args, name) for name in _infer_request_flags() if getattr(args, name, None) is not None}
    try:
        return infer_request_model()(text=text, **values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "input"
        flag = "--input" if field == "text" else f"--{field}"
        raise CLIError(f"{flag}: {err.get('msg')} (got {err.get('input')!r})") from None


def _read_file(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CLIError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None


async def _infer(options, args, fields, output: Path, fmt: str) -> None:
    import asyncio
    import time

    from flashtts_core.formats import encode_all
    from flashtts_core.openmp import TeamlessThreadPool

    from .runtime import TTSRuntime
    from .synthesis_fields import synthesis_request

    # As the server does (lifecycle.py): no thread but the model's keeps an OpenMP team.
    asyncio.get_running_loop().set_default_executor(TeamlessThreadPool(thread_name_prefix="flashtts"))
    runtime = await TTSRuntime.load(options)
    try:
        encoder = runtime.plugins.get_format(fmt)
        voice, reference = None, None
        if args.reference_audio:
            data = _read_file(args.reference_audio, "--reference_audio")
            latent = None
            if args.latent_file:
                from .reference_audio import load_latent

                latent = load_latent(_read_file(args.latent_file, "--latent_file"), "--latent_file")
            reference = await runtime.reference_from_bytes(data, fields.reference_text, latent=latent)
        elif args.latent_file:
            raise CLIError("--latent_file goes with --reference_audio (the latent of that clip)")
        elif args.name:
            voice, reference = await runtime.resolve_voice(args.name)
        request = synthesis_request(
            fields.text, fields, stream=False, voice=voice, reference=reference, pitch=fields.pitch, speed=fields.speed
        )
        start = time.perf_counter()
        audio = await runtime.render(runtime.synthesize(request))
        elapsed = time.perf_counter() - start
        sr = runtime.engine.sample_rate
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(encode_all(encoder, audio, sr))
        seconds = len(audio) / sr
        rtf = elapsed / seconds if seconds else float("nan")
        print(f"wrote {output} ({seconds:.2f} s of audio at {sr} Hz, {elapsed:.2f} s to synthesize, RTF {rtf:.2f})")
    finally:
        await runtime.close()


# -- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .settings import settings_model

    parser = argparse.ArgumentParser(prog="flashtts", description="FlashTTS: fast LLM-based text-to-speech server")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser("serve", help="start the HTTP server", description="Start the FlashTTS HTTP server.")
    add_settings_arguments(serve, settings_model())
    serve.set_defaults(func=cmd_serve)

    plugins = sub.add_parser("plugins", help="list installed plugins")
    plugins.add_argument("--json", action="store_true", help="print a JSON list")
    plugins.set_defaults(func=cmd_plugins)

    infer = sub.add_parser("infer", help="synthesise one text to an audio file, without a server")
    infer.add_argument("-i", "--input", required=True, help="text, or the path of a .txt file")
    infer.add_argument(
        "-o",
        "--output",
        required=True,
        help="audio file; the format comes from its extension (wav, mp3, opus, aac, flac, pcm)",
    )
    infer.add_argument("--name", help="a built-in voice or a saved role")
    infer.add_argument("--reference_audio", help="reference audio file to clone")
    infer.add_argument("--latent_file", help="MegaTTS3: the reference's latent (.npy, float32 [1, T, 32])")
    infer.add_argument("--log_level", default="warning")
    add_request_arguments(infer, infer_request_model(), exclude=[*NOT_INFER_FLAGS, *infer_options_model().model_fields])
    add_settings_arguments(infer, infer_options_model())
    infer.set_defaults(func=cmd_infer)

    tiny = sub.add_parser("tiny-model", help="write a tiny random checkpoint of an engine (for tests and demos)")
    tiny.add_argument("engine", help="engine name, e.g. spark or orpheus")
    tiny.add_argument("dir", help="output directory")
    tiny.add_argument("--force", action="store_true", help="write into a non-empty directory")
    tiny.set_defaults(func=cmd_tiny_model)

    add_plugin_commands(sub)
    return parser


def add_plugin_commands(sub) -> None:
    """The commands plugins registered (``register_commands``), multi-word ones under shared groups."""
    from flashtts_core.plugins import get_plugin_manager

    groups: dict[tuple[str, ...], Any] = {(): sub}
    for name, command in sorted(get_plugin_manager().commands.items()):
        words = command.words
        for depth in range(1, len(words)):
            prefix = words[:depth]
            if prefix not in groups:
                later = sorted(
                    {c.words[depth] for c in get_plugin_manager().commands.values() if c.words[:depth] == prefix}
                )
                group = groups[prefix[:-1]].add_parser(
                    prefix[-1], help=f"{' '.join(prefix)} commands: {', '.join(later)}"
                )
                groups[prefix] = group.add_subparsers(dest=f"command_{depth}", metavar="COMMAND", required=True)
        parser = groups[words[:-1]].add_parser(
            words[-1], help=command.help, description=command.description or command.help
        )
        try:
            run = command.configure(parser)
        except Exception as exc:  # a broken plugin must not take the CLI down
            logging.getLogger("flashtts.plugins").warning("command %r of plugin %r: %s", name, command.plugin, exc)
            run = None
        parser.set_defaults(func=_plugin_runner(name, run), command=name)


def _plugin_runner(name: str, run):
    def runner(args: argparse.Namespace) -> int:
        from flashtts_core.commands import CommandError

        if not callable(run):
            raise CLIError(f"the plugin behind {name!r} did not set it up (see `flashtts plugins`)")
        _setup_logging("info")
        try:
            status = run(args)
        except CommandError as exc:
            raise CLIError(str(exc)) from None
        return int(status or 0)

    return runner


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"flashtts {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
