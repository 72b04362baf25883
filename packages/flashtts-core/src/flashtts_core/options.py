"""Options: the model options every engine and backend reads, and the options each plugin declares.

Core holds only what every engine shares (:class:`EngineOptions`). An engine or backend that needs a
setting of its own declares it in its plugin (:class:`PluginOptions`, registered through the
``register_options`` hook); the server assembles its flags, environment variables and request
models from the installed plugins at startup, and the engine reads its values back with
``MyOptions.of(options)`` (server flags) or ``MyOptions.of(options, request)`` (with the request's
fields on top).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from .errors import InvalidRequest

logger = logging.getLogger("flashtts.options")

Dtype = Literal["float16", "bfloat16", "float32", "auto"]
AttnImpl = Literal["sdpa", "flash_attention_2", "eager"]
# Where users set a plugin's option: a server flag (``--name``, ``FLASHTTS_NAME``), a field of each
# synthesis request, or both (the flag is the default a request may change).
OptionScope = Literal["server", "request", "both"]
SCOPES = ("server", "request", "both")
_SCOPE_KEY = "x-flashtts-scope"  # an OpenAPI extension key in the request schemas


class EngineOptions(BaseModel):
    """Options of ``reference/server-api.md`` §2 that concern loading and running any model.

    Values of plugin options ride along as extra attributes (``EngineOptions(snac_path=...)``); the
    plugin that declared them reads them with :meth:`PluginOptions.of`."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_path: Optional[Path] = Field(None, description="Path to the TTS model directory.")
    # The server's flags name the installed backends here (flashtts_server.settings.plugin_described_fields).
    backend: Optional[str] = Field(None, description="LLM backend (`flashtts plugins` lists those installed).")
    llm_device: str = Field("auto", description="Device for the LLM (cpu, cuda, cuda:1, mps, auto).")
    tokenizer_device: str = Field("auto", description="Device for the audio tokenizer.")
    detokenizer_device: str = Field("auto", description="Device for the audio detokenizer.")
    max_length: int = Field(32768, gt=0, description="Maximum LLM context length.")
    llm_tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one LLM is split across (tensor parallel, on the backends that shard it)."
    )
    torch_dtype: Dtype = Field("auto", description="Model precision.")
    seed: int = Field(0, description="Random seed.")
    speaking_rate_bound: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Scale of each text segment's speaking-rate bound (about 3x slower than ordinary speech; "
        "a request's max_tokens can only lower it): 2 doubles it, 0 turns it off.",
    )
    batch_size: int = Field(1, gt=0, description="Maximum batch size of audio (de)tokenization.")
    llm_batch_size: int = Field(256, gt=0, description="Maximum number of concurrent LLM sequences.")
    wait_timeout: float = Field(0.01, ge=0, description="Seconds the dynamic batcher waits to fill a batch.")
    cpu_compute_thread: Literal["shared", "separate"] = Field(
        "shared",
        description="On a CPU, where the engine's codec runs: `shared` on the LLM backend's decode thread "
        "(torch, llama-cpp), between two decode steps, so one thread drives the cores (OpenMP slows every "
        "team once more threads run kernels than there are cores); `separate` on its own threads.",
    )
    # A str too: pydantic's Path would turn "s3://bucket/roles" into "s3:/bucket/roles".
    role_dir: Optional[str | Path] = Field(
        None,
        description="Saved roles: a directory, or an fsspec URL such as s3://bucket/prefix shared by replicas "
        "(default: the engine's own, data/roles for most).",
    )


# -- options of one plugin ---------------------------------------------------------------------------
def option(default: Any = None, *, help: str, scope: OptionScope = "server", **constraints: Any) -> Any:
    """Declare one option of a plugin: a pydantic ``Field`` that also says where users set it.

    ``constraints`` are ``Field``'s (``ge``, ``le``, ``title`` for the web page's label …); the type is
    the annotation, and a ``Literal`` becomes the flag's choices."""
    if scope not in SCOPES:
        raise ValueError(f"option scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    return Field(default, description=help, json_schema_extra={_SCOPE_KEY: scope}, **constraints)


def option_scope(field: FieldInfo) -> str:
    """``server``, ``request`` or ``both`` (a field declared without :func:`option` is a server flag)."""
    extra = field.json_schema_extra
    scope = extra.get(_SCOPE_KEY) if isinstance(extra, dict) else None
    return scope if scope in SCOPES else "server"


class PluginOptions(BaseModel):
    """The options of one engine or backend, declared by its plugin::

        class ToneOptions(PluginOptions):
            owner = "tone"  # the engine's (or backend's) name
            tone_gain: float = option(0.3, gt=0, le=1, help="Amplitude of the tone.")
            tone_octave: int = option(0, ge=-2, le=2, scope="request", help="Octaves up or down.")

    registered with ``@hookimpl def register_options(register): register(ToneOptions)``. The field
    names are what users type (``--tone_gain``, ``FLASHTTS_TONE_GAIN``, ``{"tone_octave": 1}``), so
    they share one namespace with core's: pick names that say whose they are.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False, protected_namespaces=())

    owner: ClassVar[str]
    # Server flags that are an error, not silently ignored, when this plugin's engine or backend is
    # not the one in use and no plugin in use declares the flag too: name -> the message, formatted
    # with ``engine``, ``backend`` (the names in use), ``value`` and ``owner``. The torch backend's
    # ``--llm_quantization``: "backend {backend!r} does not quantize the LLM itself; …".
    refused_elsewhere: ClassVar[dict[str, str]] = {}

    @classmethod
    def fields_in(cls, where: Literal["server", "request"]) -> dict[str, FieldInfo]:
        """The fields users set as server flags (``server``) or in requests (``request``)."""
        return {name: f for name, f in cls.model_fields.items() if option_scope(f) in (where, "both")}

    @classmethod
    def of(cls, options: Any = None, request: Any = None):
        """This plugin's values: the server flags from ``options`` (the server's settings, or an
        :class:`EngineOptions` carrying them as extras), then the fields ``request`` (a
        :class:`~flashtts_core.request.SynthesisRequest`) set; anything unset keeps its default."""
        values: dict[str, Any] = {}
        if options is not None:
            for name in cls.fields_in("server"):
                value = getattr(options, name, None)
                if value is not None:
                    values[name] = value
        if request is not None:
            values.update(getattr(request, "options", {}).get(cls.owner, {}))
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ())) or None
            raise InvalidRequest(f"{loc}: {err.get('msg')} (got {err.get('input')!r})", param=loc) from None


# -- assembling the options of every installed plugin -------------------------------------------------
@dataclass(frozen=True)
class DeclaredOption:
    """One option name as the installed plugins declare it, with every plugin that declares it."""

    name: str
    field: FieldInfo
    owners: tuple[str, ...]
    scope: str


def declared_options(
    classes: Iterable[type[PluginOptions]], where: Literal["server", "request"], taken: Iterable[str] = ()
) -> dict[str, DeclaredOption]:
    """The options of ``classes`` users set in ``where``, one per name. A name in ``taken`` (core's
    own flags or request fields) is refused; a name two plugins declare is shared when its type and
    default agree (a value reaches both), otherwise the later plugin's is refused. Refusals are
    logged as warnings: a plugin's mistake must not stop the server."""
    reserved = set(taken)
    found: dict[str, DeclaredOption] = {}
    for cls in classes:
        owner = cls.owner  # registered classes have one (plugins.py checks)
        for name, field in cls.fields_in(where).items():
            if name in reserved:
                logger.warning("option %r of %r is refused: the name is one of FlashTTS's own", name, owner)
                continue
            seen = found.get(name)
            if seen is None:
                found[name] = DeclaredOption(name, field, (owner,), option_scope(field))
            elif seen.field.annotation == field.annotation and seen.field.default == field.default:
                found[name] = DeclaredOption(name, seen.field, (*seen.owners, owner), seen.scope)
            else:
                logger.warning(
                    "option %r of %r is refused: %r declares it with another type or default",
                    name,
                    owner,
                    seen.owners[0],
                )
    return found


def refuse_unread_options(
    classes: Iterable[type[PluginOptions]], options: Any, engine: Optional[str], backend: Optional[str]
) -> None:
    """Raise :class:`InvalidRequest` for a server flag in ``options`` that is set (not its default)
    where only plugins not in use (neither ``engine`` nor ``backend``) read it and one of them lists
    it in :attr:`PluginOptions.refused_elsewhere`: the flag would change nothing, and saying so
    beats a silently different model."""
    classes = list(classes)
    in_use = {engine, backend} - {None}
    read = {name for cls in classes if cls.owner in in_use for name in cls.fields_in("server")}
    for cls in classes:
        if cls.owner in in_use:
            continue
        for name, message in cls.refused_elsewhere.items():
            field = cls.model_fields.get(name)
            value = getattr(options, name, None)
            if name in read or field is None or value is None or value == field.default:
                continue
            raise InvalidRequest(
                message.format(engine=engine, backend=backend, value=value, owner=cls.owner), param=name
            )


def field_definitions(declared: dict[str, DeclaredOption]) -> dict[str, Any]:
    """``pydantic.create_model`` arguments for the declared options (each field as its plugin wrote it):
    name -> (annotation, FieldInfo), typed Any as create_model's keywords mix these with its own."""
    from copy import copy

    return {name: (d.field.annotation, copy(d.field)) for name, d in declared.items()}


def resolve_device(device: str) -> str:
    """``auto`` becomes cuda, mps or cpu, whichever this machine has."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for a ``--torch_dtype`` value on a device (``auto``: float32 on CPU, else bf16/fp16)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


def llm_dtype_name(options: EngineOptions, device: str, backend: Any = None) -> str:
    """What the LLM's weights load as, for progress lines: a dtype, or where ``backend`` (the loaded
    LLM backend) takes it from (its ``weights_dtype``, e.g. a GGUF file's)."""
    own = getattr(backend, "weights_dtype", None)
    if own:
        return own
    return str(resolve_dtype(options.torch_dtype, device)).removeprefix("torch.")
