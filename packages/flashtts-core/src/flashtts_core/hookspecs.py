"""The FlashTTS plugin contract.

A plugin is a Python distribution that declares an entry point in the ``flashtts`` group::

    [project.entry-points.flashtts]
    my_plugin = "my_package.plugin"

The module it names implements any of the hooks below with ``@flashtts_core.hookimpl``. Every hook
receives a ``register`` callback and calls it once per thing it provides. Hooks register *classes*
(commands: functions that set up a parser), never loaded models: a plugin module must import
nothing heavy (torch, vllm, transformers …) at import time, so that ``flashtts plugins`` and
``flashtts serve --help`` stay instant. Heavy imports belong inside the methods that build a model.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("flashtts")
hookimpl = pluggy.HookimplMarker("flashtts")


@hookspec
def register_engines(register):
    """Register TTS engines: ``register(EngineClass)``.

    ``EngineClass`` subclasses :class:`flashtts_core.engine.Engine`. Its ``name`` is what users see;
    its ``detect(path)`` recognises a model directory, so ``--model_path`` alone picks the engine.
    """


@hookspec
def register_backends(register):
    """Register LLM backends: ``register(BackendClass)``.

    ``BackendClass`` subclasses :class:`flashtts_core.backend.LLMBackend`; its ``name`` is the value of
    ``--backend`` (torch, vllm, …). ``BackendClass.check_available()`` must raise
    :class:`flashtts_core.errors.BackendUnavailable` naming the extra to install when its library is
    missing, without importing anything heavy when it is present.
    """


@hookspec
def register_codecs(register):
    """Register audio codecs: ``register(CodecClass)``.

    ``CodecClass`` subclasses :class:`flashtts_core.codec.AudioCodec`: reference audio to tokens or
    latents and tokens back to audio, both batched. Engines build the codecs they need; registering
    them makes them discoverable and reusable by other engines.
    """


@hookspec
def register_formats(register):
    """Register output audio formats: ``register(name, EncoderClass)``.

    ``EncoderClass`` subclasses :class:`flashtts_core.formats.AudioEncoder`: one instance per
    response, fed float32 PCM chunks incrementally, returning encoded bytes as it goes.
    """


@hookspec
def register_options(register):
    """Register an engine's or backend's own options: ``register(OptionsClass)``.

    ``OptionsClass`` subclasses :class:`flashtts_core.options.PluginOptions`; its ``owner`` is the
    name of the engine or backend the options belong to, and each field is declared with
    :func:`flashtts_core.options.option` (name, type, default, help, and ``scope``: a server flag, a
    request field, or both). At startup the server turns the installed plugins' options into flags
    (``flashtts serve``/``flashtts infer``), ``FLASHTTS_*`` environment variables, fields of the
    native and OpenAI request bodies, ``/server_info``'s ``options`` and the web page's inputs. The
    engine reads its values with ``OptionsClass.of(options)`` at load and
    ``OptionsClass.of(options, request)`` per request; a request setting a field of an engine or
    backend that is not loaded gets a 400.
    """


@hookspec
def register_commands(register):
    """Register CLI commands: ``register(name, configure, help="...", description=None)``.

    ``name`` is the command's words after ``flashtts``: ``"convert gguf"`` adds ``flashtts convert
    gguf``, creating the ``convert`` group that other plugins' ``convert …`` commands share. A name
    taken by a built-in command (serve, infer, plugins, tiny-model) or by another plugin's command is
    refused with a warning.

    ``configure(parser)`` receives the command's :class:`argparse.ArgumentParser`, adds its arguments
    and returns the function that runs the command, ``run(args: argparse.Namespace) -> int`` (the
    exit status). ``configure`` runs every time ``flashtts`` builds its parser (``flashtts --help``,
    ``flashtts plugins``), so it and the module it lives in import nothing heavy; ``run`` may. For a
    user error ``run`` raises :class:`flashtts_core.commands.CommandError`: the CLI prints its message
    as one line, ``flashtts NAME: error: MESSAGE``, and exits with status 2. Long work shows its
    steps with :func:`flashtts_core.progress.progress`.
    """
