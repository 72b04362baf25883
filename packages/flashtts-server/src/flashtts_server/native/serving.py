"""The logic of the native routes: map each request onto the one synthesis path."""

from __future__ import annotations

from typing import Optional

from fastapi import Request, Response, UploadFile
from flashtts_core.errors import InvalidRequest, UnsupportedCapability

from .. import __version__
from ..audio_response import audio_response, output_spec
from ..plugin_options import RequestModels, option_infos
from ..reference_audio import reference_from_parts, require_clone
from ..runtime import TTSRuntime
from ..settings import ServerSettings
from ..synthesis_fields import check_text_length, synthesis_request
from .protocol import CloneForm, MultiSpeakRequest, ServerInfo, SpeakRequest


async def clone_voice(
    request: Request,
    runtime: TTSRuntime,
    settings: ServerSettings,
    form: CloneForm,
    reference_audio_file: Optional[UploadFile] = None,
    latent_file: Optional[UploadFile] = None,
) -> Response:
    check_text_length(form.text, settings)
    require_clone(runtime)
    spec = output_spec(runtime, form.response_format, form.sample_rate, form.stream)
    reference = await reference_from_parts(
        runtime,
        settings,
        upload=reference_audio_file,
        text=form.reference_audio,
        reference_text=form.reference_text,
        latent_file=latent_file,
        upload_param="reference_audio_file",
        text_param="reference_audio",
    )
    synthesis = synthesis_request(
        form.text, form, stream=form.stream, reference=reference, pitch=form.pitch, speed=form.speed
    )
    return await audio_response(
        request, runtime, runtime.synthesize(synthesis), spec, form.stream, synthesis.bound_report
    )


async def speak(request: Request, runtime: TTSRuntime, settings: ServerSettings, body: SpeakRequest) -> Response:
    check_text_length(body.text, settings)
    spec = output_spec(runtime, body.response_format, body.sample_rate, body.stream)
    name = body.name.strip()
    if not name:
        raise InvalidRequest("name must not be empty: give a saved role or a built-in voice", param="name")
    voice, reference = await runtime.resolve_voice(name)
    synthesis = synthesis_request(
        body.text, body, stream=body.stream, voice=voice, reference=reference, pitch=body.pitch, speed=body.speed
    )
    return await audio_response(
        request, runtime, runtime.synthesize(synthesis), spec, body.stream, synthesis.bound_report
    )


async def multi_speak(
    request: Request, runtime: TTSRuntime, settings: ServerSettings, body: MultiSpeakRequest
) -> Response:
    check_text_length(body.text, settings)
    if not runtime.engine.capabilities.multi_speaker:
        raise UnsupportedCapability(f"engine {runtime.engine.name!r} does not support multi-speaker text", param="text")
    spec = output_spec(runtime, body.response_format, body.sample_rate, body.stream)
    base = synthesis_request(body.text, body, stream=body.stream, pitch=body.pitch, speed=body.speed)
    chunks = runtime.dialogue(base, pause=settings.speaker_pause)
    return await audio_response(request, runtime, chunks, spec, body.stream, base.bound_report)


def server_info(runtime: TTSRuntime, settings: ServerSettings, models: Optional[RequestModels] = None) -> ServerInfo:
    engine = runtime.engine
    fields = models.speak.plugin_fields if models is not None else {}
    model = engine.model_path.name if engine.model_path is not None else engine.name
    return ServerInfo(
        model=model,
        engine=engine.name,
        backend=engine.backend_name,
        sample_rate=engine.sample_rate,
        capabilities=engine.capabilities.as_dict(),
        voices=list(engine.voices),
        roles=runtime.roles.names(),
        formats=sorted(runtime.plugins.formats),
        default_voice=settings.default_voice or (engine.voices[0] if engine.voices else None),
        active_generations=runtime.active_generations,
        limits={
            "max_text_length": settings.max_text_length,
            "max_upload_mb": settings.max_upload_mb,
            "max_reference_seconds": settings.max_reference_seconds,
            "max_pending_requests": settings.max_pending_requests,
            "shutdown_timeout": settings.shutdown_timeout,
            "speaking_rate_bound": settings.speaking_rate_bound,
        },
        auth_required=bool(settings.api_key),
        version=__version__,
        options=option_infos(runtime.plugins, (engine.name, engine.backend_name), fields),
    )
