"""Plugin discovery: every module named in the ``flashtts`` entry-point group is loaded and asked to
register its engines, backends, codecs, output formats, options and CLI commands."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .commands import Command, command_name
from .errors import BackendUnavailable, InvalidRequest, ModelLoadError

if TYPE_CHECKING:
    from .backend import LLMBackend
    from .codec import AudioCodec
    from .engine import Engine
    from .formats import AudioEncoder
    from .options import PluginOptions

logger = logging.getLogger("flashtts.plugins")

ENTRY_POINT_GROUP = "flashtts"
KINDS = ("engines", "backends", "codecs", "formats", "options", "commands")
# Commands of the flashtts CLI itself, which a plugin's command cannot replace.
BUILTIN_COMMANDS = ("serve", "infer", "plugins", "tiny-model")


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin module."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    engines: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    codecs: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)  # owners (engine or backend names) of registered options
    commands: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "engines": self.engines,
            "backends": self.backends,
            "codecs": self.codecs,
            "formats": self.formats,
            "options": self.options,
            "commands": self.commands,
            "error": self.error,
        }


class PluginManager:
    """Loads plugins and holds what they register, by kind and name."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager("flashtts")
        self._pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.engines: dict[str, type[Engine]] = {}
        self.backends: dict[str, type[LLMBackend]] = {}
        self.codecs: dict[str, type[AudioCodec]] = {}
        self.formats: dict[str, type[AudioEncoder]] = {}
        # owner (an engine's or backend's name) -> its PluginOptions subclass
        self.options: dict[str, type[PluginOptions]] = {}
        self.commands: dict[str, Command] = {}

    # -- loading ---------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Load every module of the ``flashtts`` entry-point group; a failure is recorded, not raised."""
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                info.error = f"{type(exc).__name__}: {exc}"
                logger.warning("plugin %r (%s) failed to load: %s", ep.name, ep.value, info.error)
                self.plugins.append(info)
                continue
            self._register_module(module, info)

    def load_module(self, module: ModuleType | str, name: str | None = None) -> PluginInfo:
        """Register a plugin module directly (used by tests and embedding applications)."""
        if isinstance(module, str):
            module = importlib.import_module(module)
        info = PluginInfo(name=name or module.__name__, module=module.__name__, distribution=None, version=None)
        self._register_module(module, info)
        return info

    def _register_module(self, module: ModuleType, info: PluginInfo) -> None:
        try:
            self._pm.register(module, name=f"{info.name}:{info.module}")  # validates hook signatures
        except ValueError:
            return  # already registered under this name
        except pluggy.PluginValidationError as exc:
            info.error = f"PluginValidationError: {exc}"
            logger.warning("plugin %r is invalid: %s", info.name, exc)
            self.plugins.append(info)
            return
        for kind in KINDS:
            impl = getattr(module, f"register_{kind}", None)
            if impl is None:
                continue
            try:
                impl(register=self._registrar(kind, info))
            except Exception as exc:
                info.error = f"{type(exc).__name__}: {exc}"
                logger.warning("plugin %r failed while registering %s: %s", info.name, kind, info.error)
        self.plugins.append(info)

    def _registrar(self, kind: str, info: PluginInfo):
        table: dict[str, type] = getattr(self, kind)
        names: list[str] = getattr(info, kind)
        if kind == "commands":
            return self._command_registrar(info)

        def register(*args):
            if kind == "formats":
                name, obj = args
            elif kind == "options":
                (obj,) = args
                _check_options_class(obj)
                name = obj.owner
            else:
                (obj,) = args
                name = obj.name
            if name in table and table[name] is not obj:
                logger.warning("%s %r registered twice; %s overrides it", kind[:-1], name, info.name)
            table[name] = obj
            if name not in names:
                names.append(name)

        return register

    def _command_registrar(self, info: PluginInfo):
        def register(name: str, configure, help: str = "", description: str | None = None) -> None:
            name = command_name(name)
            if not callable(configure):
                raise TypeError(f"command {name!r}: configure must be callable")
            taken = self._command_clash(name)
            if taken:
                logger.warning("plugin %r: command %r is refused, %s", info.name, name, taken)
                return
            self.commands[name] = Command(name, configure, help, description, plugin=info.name)
            info.commands.append(name)

        return register

    def _command_clash(self, name: str) -> str | None:
        """Why ``name`` cannot be added next to the commands there are, or None."""
        words = name.split()
        if words[0] in BUILTIN_COMMANDS:
            return f"{words[0]!r} is a built-in command"
        for other in self.commands:
            if other == name:
                return f"plugin {self.commands[other].plugin!r} registered it first"
            shorter, longer = sorted((other.split(), words), key=len)
            if longer[: len(shorter)] == shorter:  # "convert" and "convert gguf" cannot both run
                return f"it overlaps {other!r} of plugin {self.commands[other].plugin!r}"
        return None

    # -- lookups ---------------------------------------------------------------------------------
    def get_backend(self, name: str) -> type[LLMBackend]:
        cls = self.backends.get(name)
        if cls is None:
            known = ", ".join(sorted(self.backends)) or "none"
            raise InvalidRequest(f"unknown backend {name!r}; installed backends: {known}", param="backend")
        cls.check_available()
        return cls

    def check_options(self, options, engine: str | None, backend: str) -> None:
        """Refuse, before anything loads, model options that ``backend`` (and ``engine``) would
        silently ignore: the backend's own check (:meth:`LLMBackend.check_options`), then the flags
        plugins not in use declare as refused elsewhere (``--llm_quantization`` is the torch
        backend's). Raises InvalidRequest naming the option."""
        from .options import refuse_unread_options

        cls = self.get_backend(backend)
        sharding = [name for name, other in self.backends.items() if other.tensor_parallel]
        cls.check_tensor_parallel(options.llm_tensor_parallel_size, sharding)  # naming those that shard
        cls.check_options(options)
        refuse_unread_options(self.options.values(), options, engine, backend)

    def get_format(self, name: str) -> type:
        cls = self.formats.get(name)
        if cls is None:
            known = ", ".join(sorted(self.formats))
            raise InvalidRequest(
                f"unsupported response_format {name!r}; choose one of: {known}", param="response_format"
            )
        return cls

    def detect_engine(self, model_path, name: str | None = None) -> type[Engine]:
        """The engine class for a model directory: by name if given, else the one whose detect() matches."""
        from pathlib import Path

        path = Path(model_path)
        if name is not None:
            if name not in self.engines:
                raise ModelLoadError(f"unknown engine {name!r}; installed engines: {', '.join(sorted(self.engines))}")
            return self.engines[name]
        if not path.is_dir():
            raise ModelLoadError(f"model_path {str(path)!r} is not a directory")
        matches = []
        for engine_name, cls in sorted(self.engines.items()):
            try:
                if cls.detect(path):
                    matches.append(engine_name)
            except Exception as exc:
                logger.warning("engine %r failed to inspect %s: %s", engine_name, path, exc)
        if len(matches) == 1:
            return self.engines[matches[0]]
        found = ", ".join(sorted(p.name for p in path.iterdir())[:20]) or "nothing"
        if not matches:
            known = ", ".join(sorted(self.engines)) or "none installed"
            raise ModelLoadError(f"no installed engine recognises {str(path)!r} (it holds: {found}); engines: {known}")
        raise ModelLoadError(f"several engines recognise {str(path)!r}: {', '.join(matches)}")

    def backend_status(self) -> dict[str, str | None]:
        """For each backend, None when it can be used, else the reason it cannot."""
        status: dict[str, str | None] = {}
        for name, cls in sorted(self.backends.items()):
            try:
                cls.check_available()
                status[name] = None
            except BackendUnavailable as exc:
                status[name] = exc.message
        return status


def _check_options_class(cls: object) -> None:
    from .options import PluginOptions

    if not (isinstance(cls, type) and issubclass(cls, PluginOptions)):
        raise TypeError(f"register_options takes a PluginOptions subclass, not {cls!r}")
    if not isinstance(getattr(cls, "owner", None), str) or not cls.owner:
        raise TypeError(f"{cls.__name__}.owner must name the engine or backend the options belong to")


_default: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loaded from entry points on first use."""
    global _default
    if _default is None:
        _default = PluginManager()
        _default.load_entry_points()
    return _default
