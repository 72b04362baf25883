"""The logic of the OpenAI-compatible routes."""

from __future__ import annotations

import asyncio
import time
from typing import Optional

from fastapi import Request, Response
from flashtts_core.errors import InvalidRequest, NotFound
from flashtts_core.request import Level, VoiceReference

from ..audio_response import audio_response, output_spec, sse_response
from ..errors import StringAboveMaxLength
from ..reference_audio import audio_from_string, build_reference, looks_like_base64_audio
from ..runtime import TTSRuntime
from ..settings import ServerSettings
from ..synthesis_fields import check_text_length, synthesis_request
from ..url_fetch import looks_like_url
from .protocol import OPENAI_VOICES, ModelCard, ModelList, SpeechRequest, VoiceCard, VoiceId, VoiceList

_STARTED = int(time.time())
OPENAI_SAMPLE_RATE = 24_000


async def default_voice(
    runtime: TTSRuntime, settings: ServerSettings
) -> tuple[Optional[str], Optional[VoiceReference]]:
    """The voice of a request that names none: --default_voice, else the engine's first (also the
    realtime WebSocket's)."""
    if settings.default_voice:
        return await runtime.resolve_voice(settings.default_voice)
    if runtime.engine.voices:
        return runtime.engine.voices[0], None
    raise InvalidRequest(
        f"engine {runtime.engine.name!r} has no built-in voices: name a saved role, or start the server with "
        "--default_voice ROLE",
        param="voice",
    )


async def resolve_voice(
    runtime: TTSRuntime, settings: ServerSettings, voice: "str | VoiceId | None", reference_text: Optional[str]
) -> tuple[Optional[str], Optional[VoiceReference]]:
    """A voice field as (built-in voice, clone reference): URL/base64 audio, role, built-in, OpenAI name."""
    value = (voice.id if isinstance(voice, VoiceId) else voice or "").strip()
    if not value:
        return await default_voice(runtime, settings)
    if looks_like_url(value) or looks_like_base64_audio(value):
        data = await audio_from_string(value, settings, "voice")
        return None, await build_reference(runtime, settings, data, reference_text, param="voice")
    target = settings.voice_aliases.get(value.lower())
    if target is not None:  # --voice_alias: what the operator said this name means
        try:
            return await runtime.resolve_voice(target)
        except NotFound:
            known = await asyncio.to_thread(runtime.known_voices)
            raise NotFound(
                f"voice {value!r} is an alias of {target!r} (--voice_alias), which this server does not have; "
                f"available: {known}",
                param="voice",
            ) from None
    if value in runtime.engine.voices or await runtime.saved_role_version(value) is not None:
        return await runtime.resolve_voice(value)
    if value.lower() in OPENAI_VOICES:
        return await default_voice(runtime, settings)
    # The value is cut short in the message: it may be megabytes of text that is neither a name nor audio.
    known = await asyncio.to_thread(runtime.known_voices)
    raise NotFound(f"unknown voice {value[:80]!r}; available: {known}", param="voice")


def check_input_length(text: str, settings: ServerSettings) -> None:
    """``input`` over --max_text_length is a 400 worded as OpenAI words it; blank input a 400 as elsewhere."""
    if len(text) > settings.max_text_length:
        raise StringAboveMaxLength(
            f"Invalid 'input': string too long. Expected a string with maximum length {settings.max_text_length}, "
            f"but got a string with length {len(text)} instead.",
            param="input",
        )
    check_text_length(text, settings, "input")


async def create_speech(
    request: Request, runtime: TTSRuntime, settings: ServerSettings, body: SpeechRequest
) -> Response:
    check_input_length(body.input, settings)
    stream = body.stream or body.stream_format == "sse"
    # OpenAI's formats are 24 kHz (its pcm is documented as 24 kHz 16-bit mono, and clients play it so):
    # every engine's audio leaves at 24 kHz unless the request names a rate.
    rate = body.sample_rate if body.sample_rate is not None else OPENAI_SAMPLE_RATE
    spec = output_spec(runtime, body.response_format, rate, stream)
    voice, reference = await resolve_voice(runtime, settings, body.voice, body.reference_text)
    # 1.0 is every client's default: it asks for nothing, so engines without speed control accept it.
    speed = None if body.speed == 1.0 else Level.from_ratio(body.speed)
    synthesis = synthesis_request(
        body.input,
        body,
        stream=stream,
        voice=voice,
        reference=reference,
        pitch=body.pitch,
        speed=speed,
        instructions=body.instructions,
    )
    chunks = runtime.synthesize(synthesis)
    if body.stream_format == "sse":
        return await sse_response(request, runtime, chunks, spec, body.input)
    return await audio_response(request, runtime, chunks, spec, stream, synthesis.bound_report)


def model_ids(runtime: TTSRuntime) -> list[str]:
    engine = runtime.engine
    ids = [engine.model_path.name] if engine.model_path is not None else []
    if engine.name not in ids:
        ids.append(engine.name)
    return ids


def list_models(runtime: TTSRuntime) -> ModelList:
    return ModelList(data=[ModelCard(id=i, created=_STARTED) for i in model_ids(runtime)])


def get_model(runtime: TTSRuntime, model_id: str) -> ModelCard:
    if model_id not in model_ids(runtime):
        raise NotFound(f"unknown model {model_id!r}; this server has: {', '.join(model_ids(runtime))}", param="model")
    return ModelCard(id=model_id, created=_STARTED)


def list_voices(runtime: TTSRuntime, settings: ServerSettings) -> VoiceList:
    saved = runtime.roles.names()
    cards = [VoiceCard(id=n, name=n, type="role") for n in saved]
    cards += [VoiceCard(id=n, name=n, type="builtin") for n in runtime.engine.voices if n not in saved]
    taken = {c.id for c in cards}
    cards += [
        VoiceCard(id=alias, name=alias, type="alias", alias_of=target)
        for alias, target in settings.voice_aliases.items()
        if alias not in taken
    ]
    return VoiceList(data=cards, voices=[c.id for c in cards])
